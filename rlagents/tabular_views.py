"""Seeing what a tabular agent learned: greedy-policy arrows on grid-world maps, and value heat maps.

Grid worlds are recognised by what their envs expose (FrozenLake's `desc` map, CliffWalking's `shape` and
`_cliff` mask) and only when every table row is one map cell. Structured observations (a Tuple, Dict or
MultiDiscrete of discrete parts, e.g. Blackjack's) get their greedy policy as a table over the first two
components, one per value of the others. Any other table is shown as a heat map of state values over two
discretised dimensions, or of the whole Q-table (states x actions).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from rlagents.discretise import SpaceIndexer

# Action index → arrow, per env class (their action orders differ).
ARROWS = {"FrozenLakeEnv": "←↓→↑", "CliffWalkingEnv": "↑→↓←"}
# Action labels and observation component names of envs with structured observations, per env class.
ACTION_LABELS = {"BlackjackEnv": "SH"}  # stick, hit
COMPONENT_NAMES = {"BlackjackEnv": ("player sum", "dealer card", "usable ace")}
MAX_POLICY_TABLES = 8  # value combinations of the components beyond the first two
# A perceptually ordered colour ramp (viridis' anchors): low values dark blue, high values yellow.
RAMP = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64)


@dataclass
class GridMap:
    """A grid world's layout: cell labels ('' for ordinary cells) and arrows per action."""

    labels: np.ndarray  # (rows, cols) of str: 'S', 'H', 'G', 'C' or ''
    arrows: str


def grid_map(env: gym.Env, n_states: int) -> GridMap | None:
    """The map of a grid world whose states are its cells, or None for any other env."""
    u = env.unwrapped
    arrows = ARROWS.get(type(u).__name__)
    if arrows is None:
        return None
    if hasattr(u, "desc"):
        labels = np.vectorize(lambda b: b.decode() if b.decode() in "SHG" else "")(np.asarray(u.desc))
    elif hasattr(u, "shape") and hasattr(u, "_cliff"):
        labels = np.where(np.asarray(u._cliff), "C", "").astype(object)
        labels[np.unravel_index(u.start_state_index, u.shape)] = "S"
        labels[u.shape[0] - 1, u.shape[1] - 1] = "G"
    else:
        return None
    return GridMap(np.asarray(labels, dtype=object), arrows) if labels.size == n_states else None


def policy_lines(q: np.ndarray, grid: GridMap) -> list[str]:
    """The greedy action of every cell as an arrow; holes, cliffs and goals keep their letter."""
    rows, cols = grid.labels.shape
    greedy = q.argmax(axis=1).reshape(rows, cols)
    return [" ".join(grid.labels[r, c] if grid.labels[r, c] in ("H", "G", "C") else grid.arrows[greedy[r, c]]
                     for c in range(cols)) for r in range(rows)]


def greedy_path(q: np.ndarray, env: gym.Env, max_steps: int = 1_000) -> list[int] | None:
    """States visited by the greedy policy from the start state, for deterministic envs with a model `P`.

    None when the env is stochastic (there is no single path) or exposes no model.
    """
    u = env.unwrapped
    model = getattr(u, "P", None)
    start = getattr(u, "initial_state_distrib", None)
    if model is None or start is None:
        return None
    if any(len(outcomes) != 1 for actions in model.values() for outcomes in actions.values()):
        return None
    state = int(np.argmax(start))
    path = [state]
    for _ in range(max_steps):
        _, state, _, terminated = model[state][int(q[state].argmax())][0]
        state = int(state)
        if state in path and not terminated:  # a loop: the greedy policy never gets anywhere
            path.append(state)
            break
        path.append(state)
        if terminated:
            break
    return path


def path_lines(path: list[int], q: np.ndarray, grid: GridMap) -> list[str]:
    """The greedy path drawn on the map: arrows on the cells it crosses, '·' elsewhere."""
    rows, cols = grid.labels.shape
    cells = [["·" if not grid.labels[r, c] else grid.labels[r, c] for c in range(cols)] for r in range(rows)]
    for state in path:
        r, c = divmod(state, cols)
        if grid.labels[r, c] not in ("G", "C", "H"):
            cells[r][c] = grid.arrows[int(q[state].argmax())]
    return [" ".join(row) for row in cells]


def colour(values: np.ndarray) -> np.ndarray:
    """RGB (uint8) of each value on the colour ramp, scaled between the array's min and max."""
    low, high = float(values.min()), float(values.max())
    t = (values - low) / (high - low) if high > low else np.zeros_like(values)
    pos = t * (len(RAMP) - 1)
    i = np.clip(np.floor(pos).astype(int), 0, len(RAMP) - 2)
    frac = (pos - i)[..., None]
    return (RAMP[i] * (1 - frac) + RAMP[i + 1] * frac).round().astype(np.uint8)


def save_heatmap(values: np.ndarray, path: Path, title: str, labels: np.ndarray | None = None,
                 max_side: int = 640, row_names: list[str] | None = None,
                 col_names: list[str] | None = None) -> Path:
    """Write a 2-D array as a PNG heat map: cells scaled up, optional per-cell labels (dark text on bright
    cells, white on dark ones), optional row/column names in the margins, and a min/max legend."""
    rows, cols = values.shape
    cell_w = max(2, min(48, max_side // cols))
    cell_h = max(2, min(48, max_side // rows))
    rgb = colour(values)
    grid = Image.fromarray(rgb).resize((cols * cell_w, rows * cell_h), Image.NEAREST)
    left = 24 if row_names else 0
    top = 18 if col_names else 0
    legend = 36
    image = Image.new("RGB", (max(left + grid.width, 320), top + grid.height + legend), "white")
    image.paste(grid, (left, top))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    if labels is not None and cell_w >= 16 and cell_h >= 16:
        bright = rgb.astype(float) @ np.array([0.299, 0.587, 0.114]) > 140  # perceived luminance per cell
        for r in range(rows):
            for c in range(cols):
                if labels[r, c]:
                    draw.text((left + c * cell_w + cell_w // 3, top + r * cell_h + cell_h // 4), labels[r, c],
                              fill="black" if bright[r, c] else "white", font=font)
    for r, name in enumerate(row_names or []):
        draw.text((4, top + r * cell_h + cell_h // 2 - 6), name, fill="black", font=font)
    for c, name in enumerate(col_names or []):
        draw.text((left + c * cell_w + cell_w // 2 - 3, 3), name, fill="black", font=font)
    draw.text((4, top + grid.height + 4), f"{title}", fill="black", font=font)
    draw.text((4, top + grid.height + 20), f"min {values.min():.3g} (dark)  max {values.max():.3g} (yellow)",
              fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, format="PNG")
    tmp.replace(path)
    return path


def structured_policy_lines(q: np.ndarray, indexer: SpaceIndexer, env: gym.Env,
                            visited: np.ndarray | None = None) -> list[str]:
    """The greedy action of every state of a structured observation space as tables: rows are the values of
    the first component, columns those of the second, one table per value combination of the others.
    States never visited show '·'; rows and columns with none visited are left out."""
    sizes = [int(b) for b in indexer.bins]
    if len(sizes) < 2 or int(np.prod(sizes[2:])) > MAX_POLICY_TABLES:
        return []
    kind = type(env.unwrapped).__name__
    labels = ACTION_LABELS.get(kind) or [str(a) for a in range(q.shape[1])]
    names = COMPONENT_NAMES.get(kind, indexer.names)
    seen = (np.ones(q.shape[0], dtype=bool) if visited is None else visited).reshape(sizes[0], sizes[1], -1)
    greedy = q.argmax(axis=1).reshape(sizes[0], sizes[1], -1)
    starts = [int(s) for s in indexer.starts]
    width = max(len(str(starts[1] + sizes[1] - 1)), *(len(label) for label in labels))
    actions = ", ".join(f"{label}={a}" for a, label in enumerate(labels))
    lines = [f"greedy policy (actions: {actions}; rows: {names[0]}, columns: {names[1]}; · = never visited):"]
    for rest, combo in enumerate(np.ndindex(*sizes[2:])):
        rows = [r for r in range(sizes[0]) if seen[r, :, rest].any()]
        cols = [c for c in range(sizes[1]) if seen[:, c, rest].any()]
        if not rows:
            continue
        if combo:
            lines.append("  " + ", ".join(f"{names[2 + i]} = {starts[2 + i] + v}" for i, v in enumerate(combo)))
        row_width = len(str(starts[0] + sizes[0] - 1))
        lines.append("  " + " " * row_width + " " + " ".join(str(starts[1] + c).rjust(width) for c in cols))
        for r in reversed(rows):  # high values on top, as policy charts are drawn
            cells = [(labels[greedy[r, c, rest]] if seen[r, c, rest] else "·").rjust(width) for c in cols]
            lines.append("  " + str(starts[0] + r).rjust(row_width) + " " + " ".join(cells))
    return lines


def describe_table(q: np.ndarray, env: gym.Env, out_dir: Path, bins: tuple[int, ...] | None = None, *,
                   indexer: SpaceIndexer | None = None, visited: np.ndarray | None = None) -> list[str]:
    """Lines showing the greedy policy of Q-table `q` on `env` (grid worlds, structured observations given
    their `indexer`, with `visited` states), and a heat map in `out_dir`."""
    lines: list[str] = []
    image = Path(out_dir) / "values.png"
    if indexer is not None:
        lines += structured_policy_lines(q, indexer, env, visited)
    grid = grid_map(env, q.shape[0])
    if grid is not None:
        lines.append("greedy policy:")
        lines += ["  " + line for line in policy_lines(q, grid)]
        path = greedy_path(q, env)
        if path is not None:
            lines.append(f"greedy path from the start ({len(path) - 1} steps):")
            lines += ["  " + line for line in path_lines(path, q, grid)]
        save_heatmap(q.max(axis=1).reshape(grid.labels.shape), image, "state value max_a Q(s,a)", grid.labels)
    elif bins is not None and sum(b > 1 for b in bins) == 2:
        kept = [d for d, b in enumerate(bins) if b > 1]
        values = q.max(axis=1).reshape([bins[d] for d in kept])  # row-major, like the discretiser's index
        save_heatmap(values, image, f"max_a Q over observation dims {kept[0]} (rows) x {kept[1]} (columns)")
    elif indexer is not None and len(indexer.bins) >= 2:
        values = q.max(axis=1).reshape(int(indexer.bins[0]), -1)  # first component x the others, row-major
        seen = (np.ones(q.shape[0], dtype=bool) if visited is None else visited).reshape(values.shape)
        rows, cols = seen.any(axis=1), seen.any(axis=0)
        if rows.any():
            values = values[rows][:, cols]
        save_heatmap(values, image, f"max_a Q: {indexer.names[0]} (rows) x the other components (columns)")
    else:
        save_heatmap(q, image, "Q(s,a): states (rows) x actions (columns)")
    lines.append(f"value heat map: {image}")
    return lines

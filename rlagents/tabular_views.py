"""Seeing what a tabular agent learned: greedy-policy arrows on grid-world maps, and value heat maps.

Grid worlds are recognised by what their envs expose (FrozenLake's `desc` map, CliffWalking's `shape` and
`_cliff` mask) and only when every table row is one map cell. Any other table is shown as a heat map of
state values over two discretised dimensions, or of the whole Q-table (states x actions).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Action index → arrow, per env class (their action orders differ).
ARROWS = {"FrozenLakeEnv": "←↓→↑", "CliffWalkingEnv": "↑→↓←"}
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


def describe_table(q: np.ndarray, env: gym.Env, out_dir: Path, bins: tuple[int, ...] | None = None) -> list[str]:
    """Lines showing the greedy policy of Q-table `q` on `env` (grid worlds), and a heat map in `out_dir`."""
    lines: list[str] = []
    image = Path(out_dir) / "values.png"
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
    else:
        save_heatmap(q, image, "Q(s,a): states (rows) x actions (columns)")
    lines.append(f"value heat map: {image}")
    return lines

"""`MaskedMaze-v0` / `MaskedMazeDict-v0`: a small maze whose walls are action masks."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

LAYOUT = (
    "...#G",
    "..#..",
    ".#...",
    "...#.",
    "#....",
)
MOVES = ((-1, 0), (0, 1), (1, 0), (0, -1))  # up, right, down, left
STEP_COST = 0.01
CRASH_REWARD = -1.0
GOAL_REWARD = 1.0
CELL_PIXELS = 32


class MaskedMazeEnv(gym.Env):
    """
    ## Description

    A robot in a 5×5 maze walks to the goal (top right). Moving into a wall or off the grid is an illegal
    move: it crashes the robot and ends the episode. Every state says which moves are legal, as an action
    mask, so an agent that takes masks never crashes; one that ignores them learns the walls by crashing.

    ## Observation Space

    `Discrete(25)`: the robot's cell, `row * 5 + column`. With `mask_in_obs=True` (`MaskedMazeDict-v0`):
    `Dict(observation=Discrete(25), action_mask=Box(0, 1, (4,), int8))`.

    ## Action Space

    `Discrete(4)`: 0 up, 1 right, 2 down, 3 left.

    ## Action Mask

    `info["action_mask"]` after `reset` and every `step` (or the observation's `action_mask` key): an int8
    array of 4, 1 where the move stays on the grid and off the walls.

    ## Rewards

    −0.01 per legal move, +1 on reaching the goal, −1 for a crash (an illegal move).

    ## Starting State

    A free cell other than the goal, drawn uniformly from `self.np_random`.

    ## Episode End

    Terminated at the goal or on a crash; truncated after 50 steps (the registration's `max_episode_steps`).
    The longest shortest path is 12 moves, so an optimal policy's return is at least 0.89; `reward_threshold`
    is 0.8.

    ## Arguments

    `mask_in_obs` (default False): put the mask in a `Dict` observation instead of the info.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, render_mode: str | None = None, mask_in_obs: bool = False):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.render_mode = render_mode
        self.mask_in_obs = bool(mask_in_obs)
        self.walls = np.array([[c == "#" for c in row] for row in LAYOUT])
        self.size = len(LAYOUT)
        self.goal = next((r, c) for r, row in enumerate(LAYOUT) for c, ch in enumerate(row) if ch == "G")
        self.starts = [(r, c) for r in range(self.size) for c in range(self.size)
                       if not self.walls[r, c] and (r, c) != self.goal]
        cells = gym.spaces.Discrete(self.size * self.size)
        mask_space = gym.spaces.Box(0, 1, (len(MOVES),), np.int8)
        self.observation_space = (gym.spaces.Dict({"observation": cells, "action_mask": mask_space})
                                  if self.mask_in_obs else cells)
        self.action_space = gym.spaces.Discrete(len(MOVES))
        self.pos = self.starts[0]
        self.crashed = False

    def action_mask(self) -> np.ndarray:
        """1 for each move that stays on the grid and off the walls."""
        mask = np.zeros(len(MOVES), dtype=np.int8)
        for a, (dr, dc) in enumerate(MOVES):
            r, c = self.pos[0] + dr, self.pos[1] + dc
            mask[a] = 0 <= r < self.size and 0 <= c < self.size and not self.walls[r, c]
        return mask

    def _observe(self) -> tuple[Any, dict[str, Any]]:
        cell = self.pos[0] * self.size + self.pos[1]
        mask = self.action_mask()
        if self.mask_in_obs:
            return {"observation": cell, "action_mask": mask}, {}
        return cell, {"action_mask": mask}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.pos = self.starts[int(self.np_random.integers(len(self.starts)))]
        self.crashed = False
        return self._observe()

    def step(self, action):
        action = int(action)
        if not 0 <= action < len(MOVES):
            raise ValueError(f"action must be 0 (up), 1 (right), 2 (down) or 3 (left), got {action!r}")
        if not self.action_mask()[action]:
            self.crashed = True
            obs, info = self._observe()
            return obs, CRASH_REWARD, True, False, {**info, "crashed": True}
        dr, dc = MOVES[action]
        self.pos = (self.pos[0] + dr, self.pos[1] + dc)
        at_goal = self.pos == self.goal
        obs, info = self._observe()
        return obs, GOAL_REWARD if at_goal else -STEP_COST, at_goal, False, info

    def render(self) -> np.ndarray | None:
        """The maze (walls dark, goal green) with the robot as a square (red after a crash), RGB uint8."""
        if self.render_mode != "rgb_array":
            return None
        s = CELL_PIXELS
        frame = np.full((self.size * s, self.size * s, 3), 235, dtype=np.uint8)
        frame[np.kron(self.walls, np.ones((s, s), dtype=bool))] = (60, 60, 60)
        gr, gc = self.goal
        frame[gr * s + 2:(gr + 1) * s - 2, gc * s + 2:(gc + 1) * s - 2] = (80, 190, 90)
        r, c = self.pos
        frame[r * s + 8:(r + 1) * s - 8, c * s + 8:(c + 1) * s - 8] = (220, 40, 40) if self.crashed else (40, 90, 220)
        frame[::s] = frame[:, ::s] = (180, 180, 180)  # grid lines
        return frame

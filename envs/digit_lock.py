"""`DigitLock-v0`: a combination lock whose code is a handwritten digit."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from rlagents.digits import CANVAS, canvas_space, sklearn_test_digits

N_POSITIONS = 10
TURN_DOWN, TURN_UP, OPEN = 0, 1, 2
TURN_COST = 0.01


class DigitLockEnv(gym.Env):
    """
    ## Description

    A combination lock read from a handwritten digit. Each episode shows one digit from scikit-learn's
    `load_digits`, drawn from the digit classifier's *test* split (`rlagents.digits.split_indices` with
    `split_seed`, the classifier's default 0), so a backbone trained by `python -m rlagents.classify` has
    never seen it. The dial starts at a random position 0–9; the lock opens at the digit's value.

    ## Observation Space

    `Dict(dial=Discrete(10), image=Box(0, 255, (1, 12, 12), uint8))`: `image` is the digit drawn on the
    classifier's canvas (channel-first, `rlagents.digits.render_digits`), `dial` the dial position.

    ## Action Space

    `Discrete(3)`: 0 turns the dial down, 1 turns it up (both wrap around 0–9), 2 tries to open the lock.

    ## Rewards

    −0.01 for each turn; opening gives +1 at the digit's value and −1 elsewhere. The best return is
    1 − 0.01 × (turns needed), at least 0.95.

    ## Starting State

    A digit drawn uniformly from the test split and a dial position drawn uniformly from 0–9, both from
    `self.np_random`.

    ## Episode End

    Terminated when the lock is tried (opened or not), with `info["is_success"]` saying whether it opened;
    truncated after 30 steps (the registration's `max_episode_steps`). `reward_threshold` is 0.9.

    ## Arguments

    `split_seed` (default 0): the split whose test part supplies the digits; `render_scale` (default 20):
    screen pixels per canvas pixel in `rgb_array` renders.

    ```python
    env = gymnasium.make("DigitLock-v0", render_mode="rgb_array")  # after `import envs`
    ```
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, render_mode: str | None = None, split_seed: int = 0, render_scale: int = 20):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.render_mode = render_mode
        self.render_scale = int(render_scale)
        self.images, self.labels = sklearn_test_digits(int(split_seed))
        self.observation_space = gym.spaces.Dict({"image": canvas_space(), "dial": gym.spaces.Discrete(N_POSITIONS)})
        self.action_space = gym.spaces.Discrete(3)
        self.index = 0
        self.digit = 0
        self.dial = 0
        self.elapsed = 0

    def _image(self) -> np.ndarray:
        """The image the agent sees now (a subclass may hide it)."""
        return self.images[self.index].copy()

    def _obs(self) -> dict[str, Any]:
        return {"image": self._image(), "dial": np.int64(self.dial)}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.index = int(self.np_random.integers(len(self.images)))
        self.digit = int(self.labels[self.index])
        self.dial = int(self.np_random.integers(N_POSITIONS))
        self.elapsed = 0  # steps taken this episode
        return self._obs(), {}

    def step(self, action):
        action = int(action)
        if action == TURN_DOWN:
            self.dial = (self.dial - 1) % N_POSITIONS
            reward, terminated = -TURN_COST, False
        elif action == TURN_UP:
            self.dial = (self.dial + 1) % N_POSITIONS
            reward, terminated = -TURN_COST, False
        elif action == OPEN:
            reward, terminated = (1.0 if self.dial == self.digit else -1.0), True
        else:
            raise ValueError(f"action must be 0 (down), 1 (up) or 2 (open), got {action!r}")
        self.elapsed += 1
        info = {"is_success": self.dial == self.digit} if terminated else {}
        return self._obs(), reward, terminated, False, info

    def render(self) -> np.ndarray | None:
        """The digit scaled up, above a strip of ten dial cells with the current position lit (RGB uint8)."""
        if self.render_mode != "rgb_array":
            return None
        s = self.render_scale
        digit = np.kron(self._rendered_digit(), np.ones((s, s), dtype=np.uint8))
        width = CANVAS * s
        cell = width // N_POSITIONS
        strip = np.full((cell, width), 40, dtype=np.uint8)
        for position in range(N_POSITIONS):
            left = position * cell
            # the lit cell is white, the others grey with a dark border so positions can be counted
            strip[2:-2, left + 2:left + cell - 2] = 255 if position == self.dial else 110
        grey = np.concatenate([digit, strip])
        frame = np.repeat(grey[:, :, None], 3, axis=2)
        frame[CANVAS * s:, self.dial * cell + 2:(self.dial + 1) * cell - 2, 2] = 0  # lit cell in yellow
        return frame

    def _rendered_digit(self) -> np.ndarray:
        """The (CANVAS, CANVAS) grey image drawn above the dial in renders."""
        return self.images[self.index][0]

"""`DigitRecall-v0`: DigitLock whose digit is shown only at the start of the episode."""

from __future__ import annotations

import numpy as np

from envs.digit_lock import DigitLockEnv

HIDDEN_BRIGHTNESS = 0.25  # renders draw the hidden digit this dim, so a viewer can still check the answer


class DigitRecallEnv(DigitLockEnv):
    """
    ## Description

    `DigitLock-v0` with a memory test: the digit is shown in the first `show_steps` observations of an
    episode (by default only the one `reset` returns) and the image is blank (all zeros) after that, so an
    agent must remember the digit while it turns the dial. Everything else — the digits (the classifier's
    test split), the canvas, the dial, the actions, the rewards, the 30-step limit, `reward_threshold` 0.9 and
    `info["is_success"]` — is DigitLock's, so the classifier's backbone transfers and returns compare.

    An agent without memory sees the digit only while it is shown: it can open at once when the dial already
    points at the digit (1 episode in 10) and must otherwise guess from the dial alone.

    ## Observation Space

    `Dict(dial=Discrete(10), image=Box(0, 255, (1, 12, 12), uint8))`, as DigitLock's; `image` is all zeros
    from observation `show_steps` on.

    ## Arguments

    `show_steps` (default 1, at least 1): how many observations, counting the one from `reset`, show the
    digit; `split_seed` and `render_scale` as in DigitLock. `rgb_array` renders draw the digit dimmed once it
    is hidden from the agent.

    ```python
    env = gymnasium.make("DigitRecall-v0", render_mode="rgb_array")  # after `import envs`
    ```
    """

    def __init__(self, render_mode: str | None = None, split_seed: int = 0, render_scale: int = 20,
                 show_steps: int = 1):
        if int(show_steps) < 1:
            raise ValueError(f"show_steps must be at least 1 (the reset observation shows the digit), got {show_steps!r}")
        super().__init__(render_mode=render_mode, split_seed=split_seed, render_scale=render_scale)
        self.show_steps = int(show_steps)

    @property
    def shown(self) -> bool:
        """Whether the current observation shows the digit."""
        return self.elapsed < self.show_steps

    def _image(self) -> np.ndarray:
        return super()._image() if self.shown else np.zeros_like(self.images[self.index])

    def _rendered_digit(self) -> np.ndarray:
        digit = super()._rendered_digit()
        return digit if self.shown else (digit * HIDDEN_BRIGHTNESS).astype(np.uint8)

"""`CartPoleNoVelocity-v0`: CartPole-v1 showing only the cart's position and the pole's angle."""

from __future__ import annotations

import numpy as np
from gymnasium import spaces
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

VISIBLE = [0, 2]  # cart position, pole angle (CartPole's observation indices)


class CartPoleNoVelocityEnv(CartPoleEnv):
    """
    ## Description

    Gymnasium's CartPole with the two velocities removed from the observation, a standard partially
    observable task (RL Zoo's `CartPoleNoVel-v1`): one observation does not say which way the pole is
    falling, two consecutive ones do, so a memoryless agent cannot balance it for long and an agent that
    remembers (a recurrent policy, or stacked frames) can.

    ## Observation Space

    `Box([-4.8, -0.419], [4.8, 0.419], (2,), float32)`: cart position and pole angle (radians), as in
    CartPole's observation indices 0 and 2.

    ## Action Space, Rewards, Starting State, Episode End

    CartPole-v1's: push left (0) or right (1); +1 per step; truncated after 500 steps (the registration's
    `max_episode_steps`), `reward_threshold` 475. Keyword arguments are CartPole's.

    ```python
    env = gymnasium.make("CartPoleNoVelocity-v0", render_mode="rgb_array")  # after `import envs`
    ```
    """

    def __init__(self, render_mode: str | None = None, **kwargs):
        super().__init__(render_mode=render_mode, **kwargs)
        full = self.observation_space
        self.observation_space = spaces.Box(full.low[VISIBLE], full.high[VISIBLE], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = super().reset(seed=seed, options=options)
        return obs[VISIBLE], info

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs[VISIBLE], reward, terminated, truncated, info

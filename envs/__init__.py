"""rlagents' own Gymnasium environments. Importing this package registers them with Gymnasium.

- `DigitLock-v0` (`envs/digit_lock.py`): a combination lock whose code is a handwritten digit; `Dict`
  observations (`image`, `dial`) on the digit classifier's canvas.
"""

import gymnasium as gym

if "DigitLock-v0" not in gym.registry:  # importing twice (e.g. from a reloaded module) must not re-register
    gym.register(id="DigitLock-v0", entry_point="envs.digit_lock:DigitLockEnv", max_episode_steps=30,
                 reward_threshold=0.9)

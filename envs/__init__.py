"""rlagents' own Gymnasium environments. Importing this package registers them with Gymnasium.

- `DigitLock-v0` (`envs/digit_lock.py`): a combination lock whose code is a handwritten digit; `Dict`
  observations (`image`, `dial`) on the digit classifier's canvas.
- `MaskedMaze-v0` / `MaskedMazeDict-v0` (`envs/masked_maze.py`): a 5×5 maze whose walls are action masks
  (`info["action_mask"]`, or an `action_mask` key of a `Dict` observation); an illegal move crashes.
- `DigitRecall-v0` (`envs/digit_recall.py`): DigitLock whose digit is shown only in the first observation,
  then the image goes blank (a memory task).
- `CartPoleNoVelocity-v0` (`envs/cartpole_no_velocity.py`): CartPole-v1 showing only the cart's position and
  the pole's angle (a memory task).
"""

import gymnasium as gym

if "DigitLock-v0" not in gym.registry:  # importing twice (e.g. from a reloaded module) must not re-register
    gym.register(id="DigitLock-v0", entry_point="envs.digit_lock:DigitLockEnv", max_episode_steps=30,
                 reward_threshold=0.9)
if "MaskedMaze-v0" not in gym.registry:
    gym.register(id="MaskedMaze-v0", entry_point="envs.masked_maze:MaskedMazeEnv", max_episode_steps=50,
                 reward_threshold=0.8)
    gym.register(id="MaskedMazeDict-v0", entry_point="envs.masked_maze:MaskedMazeEnv", max_episode_steps=50,
                 reward_threshold=0.8, kwargs={"mask_in_obs": True})
if "DigitRecall-v0" not in gym.registry:
    gym.register(id="DigitRecall-v0", entry_point="envs.digit_recall:DigitRecallEnv", max_episode_steps=30,
                 reward_threshold=0.9)
if "CartPoleNoVelocity-v0" not in gym.registry:  # CartPole-v1's limit and threshold
    gym.register(id="CartPoleNoVelocity-v0", entry_point="envs.cartpole_no_velocity:CartPoleNoVelocityEnv",
                 max_episode_steps=500, reward_threshold=475.0)

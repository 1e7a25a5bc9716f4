"""Stable-Baselines3 algorithms behind our `Agent` interface: the shared part of the reference agents
`sb3-dqn`, `sb3-ppo`, `sb3-a2c` and `sb3-recurrent-ppo`.

SB3's own `learn()` trains them (`Agent.drive`): it steps the training loop's own vector env through
`LoopVecEnv`, an SB3 `VecEnv` that reports every step back to the loop, so the loop still owns evaluation
(SB3's policy with `deterministic=True`, on our eval envs and schedule), TensorBoard logging under our tags,
checkpoints and `summary.json`, and "training seconds" mean the same for every agent. Checkpoints hold the
policy's weights, optimizer and VecNormalize statistics in our safetensors format; SB3's pickled `.zip` is
never written or read.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch

from rlagents.agents.base import Agent, StepCallback, require_zero_start
from rlagents.config import param
from rlagents.errors import UnsupportedSpaceError
from rlagents.networks import MAX_WIDTH

# SB3 logger keys → our TensorBoard tags (the names our own agents log under).
TAGS = {"train/loss": "losses/td_loss", "train/policy_gradient_loss": "losses/policy_loss",
        "train/value_loss": "losses/value_loss", "train/learning_rate": "charts/learning_rate",
        "train/n_updates": "charts/updates", "rollout/exploration_rate": "charts/epsilon",
        "train/approx_kl": "losses/approx_kl", "train/clip_fraction": "losses/clip_fraction",
        "train/explained_variance": "losses/explained_variance", "train/std": "charts/action_std"}


@dataclass
class SB3Config:
    """Fields every SB3 reference agent has; subclasses set SB3's own defaults for their algorithm."""

    lr: float = param(1.0e-4, "learning rate", low=0.0, low_open=True)
    lr_schedule: Literal["constant", "linear"] = param("constant", "learning rate schedule: constant, or "
                                                       "linear to 0 over training (RL Zoo's lin_)")
    gamma: float = param(0.99, "discount factor", low=0.0, high=1.0)
    net_arch: tuple[int, ...] = param((64, 64), "hidden layer widths of SB3's MLP policy", low=1, high=MAX_WIDTH)
    max_grad_norm: float = param(10.0, "gradient norm clip", low=0.0, low_open=True)
    normalize: bool = param(False, "VecNormalize observations and rewards (RL Zoo's normalize: true)")


def schedule(value: float, kind: Literal["constant", "linear"]):
    """SB3 schedule: a constant, or linear from `value` to 0 over training (RL Zoo's `lin_<value>`)."""
    if kind == "linear":
        return lambda progress_remaining: progress_remaining * value
    return value


def _loop_vec_env_class():
    from stable_baselines3.common.vec_env.base_vec_env import VecEnv

    class _LoopVecEnv(VecEnv):
        """An SB3 VecEnv over the training loop's vector env; reports each step to the loop's `on_step`.

        Both use same-step autoreset: the returned observation is the reset one and the real last one goes
        to `infos[i]["terminal_observation"]`, with `TimeLimit.truncated` for SB3's bootstrapping.
        """

        def __init__(self, n_envs: int, obs_space: gym.Space, action_space: gym.Space):
            super().__init__(n_envs, obs_space, action_space)
            self.envs: gym.vector.VectorEnv | None = None
            self.on_step: StepCallback | None = None
            self.first_obs: np.ndarray | None = None
            self.keep_going = True
            self._actions: np.ndarray | None = None

        def attach(self, envs: gym.vector.VectorEnv, obs: np.ndarray, on_step: StepCallback) -> None:
            self.envs, self.first_obs, self.on_step, self.keep_going = envs, obs, on_step, True

        def reset(self):
            if self.first_obs is not None:  # the loop has reset (and seeded) the envs already
                obs, self.first_obs = self.first_obs, None
                return obs
            return self.envs.reset()[0]

        def step_async(self, actions: np.ndarray) -> None:
            self._actions = actions

        def step_wait(self):
            obs, rewards, terminated, truncated, infos = self.envs.step(self._actions)
            dones = terminated | truncated
            out_infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
            for i in np.flatnonzero(dones):
                out_infos[i]["terminal_observation"] = infos["final_obs"][i]
                out_infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            self.keep_going = self.on_step(rewards, terminated, truncated, dones if dones.any() else None)
            return obs, rewards.astype(np.float32), dones, out_infos

        def close(self) -> None:
            pass

        def get_attr(self, attr_name, indices=None):
            if getattr(self, "envs", None) is None:  # not attached yet (SB3 asks for render_mode)
                return [None for _ in self._indices(indices)]
            return [getattr(env, attr_name) for env in self._pick(indices)]

        def set_attr(self, attr_name, value, indices=None):
            for env in self._pick(indices):
                setattr(env, attr_name, value)

        def env_method(self, method_name, *args, indices=None, **kwargs):
            return [getattr(env, method_name)(*args, **kwargs) for env in self._pick(indices)]

        def env_is_wrapped(self, wrapper_class, indices=None):
            return [False] * len(list(self._indices(indices)))

        def _pick(self, indices):
            return [self.envs.envs[i] for i in self._indices(indices)] if getattr(self, "envs", None) else []

        def _indices(self, indices):
            if indices is None:
                return range(self.num_envs)
            return [indices] if isinstance(indices, int) else indices

    return _LoopVecEnv


class SB3Agent(Agent):
    """Base of the SB3 reference agents: subclasses set `algorithm` and build the SB3 keyword arguments."""

    drives_env = True
    discrete_only = False

    @classmethod
    def check_spaces(cls, obs_space: gym.Space, action_space: gym.Space, config: Any) -> None:
        if cls.discrete_only and not isinstance(action_space, gym.spaces.Discrete):
            raise UnsupportedSpaceError(f"{cls.name} needs a Discrete action space, got {action_space}")
        if not isinstance(action_space, (gym.spaces.Discrete, gym.spaces.Box)):
            raise UnsupportedSpaceError(f"{cls.name} needs a Discrete or Box action space, got {action_space}")
        flat_box = isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1
        if not (flat_box or isinstance(obs_space, gym.spaces.Discrete)):
            raise UnsupportedSpaceError(f"{cls.name} uses SB3's MlpPolicy: it needs flat Box or Discrete "
                                        f"observations, got {obs_space}")
        require_zero_start(cls.name, obs_space, action_space)  # SB3 ignores a Discrete space's start

    @abstractmethod
    def algorithm_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the SB3 algorithm's constructor, from `self.config`."""

    @abstractmethod
    def algorithm(self):
        """The SB3 algorithm class."""

    def policy_name(self) -> str:
        """The SB3 policy for this agent's observation space."""
        return "MlpPolicy"

    def __init__(self, config: Any, obs_space: gym.Space, action_space: gym.Space, **kwargs: Any):
        super().__init__(config, obs_space, action_space, **kwargs)
        from stable_baselines3.common.logger import Logger
        from stable_baselines3.common.vec_env import VecNormalize

        self.vec = _loop_vec_env_class()(self.n_envs, obs_space, action_space)
        env = self.vec
        self.vecnorm = None
        if config.normalize:
            self.vecnorm = env = VecNormalize(self.vec, gamma=config.gamma)
        self.model = self.algorithm()(self.policy_name(), env, seed=self.seed, device=str(self.device), verbose=0,
                                      **self.algorithm_kwargs())
        captured: dict[str, float] = {}

        class CaptureLogger(Logger):  # keeps SB3's training scalars for `metrics()`; writes nothing
            def record(self, key, value, exclude=None):
                super().record(key, value, exclude)
                if key in TAGS and isinstance(value, (int, float, np.floating, np.integer)):
                    captured[TAGS[key]] = float(value)

        self.model.set_logger(CaptureLogger(folder=None, output_formats=[]))
        self._captured = captured
        self._train_seconds = 0.0
        self._train_calls = 0
        train = self.model.train

        def timed_train(*args, **kw):  # the update cost reported in summary.json
            t0 = time.perf_counter()
            train(*args, **kw)
            self._train_seconds += time.perf_counter() - t0
            self._train_calls += 1

        self.model.train = timed_train

    def drive(self, envs: gym.vector.VectorEnv, obs: np.ndarray, steps: int, on_step: StepCallback) -> None:
        from stable_baselines3.common.callbacks import BaseCallback

        vec = self.vec

        class KeepGoing(BaseCallback):  # stops learn() when the loop says so (end of budget, SIGTERM)
            def _on_step(self) -> bool:
                return vec.keep_going

        vec.attach(envs, obs, on_step)
        self.model.learn(total_timesteps=steps, callback=KeepGoing(), reset_num_timesteps=True)

    def act(self, obs: np.ndarray, *, explore: bool) -> np.ndarray:
        if self.vecnorm is not None:
            obs = self.vecnorm.normalize_obs(obs)
        actions, _ = self.model.policy.predict(obs, deterministic=not explore)
        return actions

    def export_module(self) -> torch.nn.Module:
        """Greedy policy for `rlagents.export`, what `act(explore=False)` runs: VecNormalize's observation
        scaling (when used), SB3's own deterministic `_predict` (argmax of Q-values or logits, or the Gaussian
        mean; SB3's observation preprocessing is inside it), then `predict`'s clip into Box action bounds."""
        from rlagents.errors import ExportError
        from rlagents.graphs import Normalise

        policy = self.model.policy
        if getattr(policy, "squash_output", False):
            raise ExportError(f"{self.name} with squash_output cannot be exported: only clipped actions are")
        box = isinstance(self.action_space, gym.spaces.Box)
        shape = tuple(self.action_space.shape)
        low = torch.as_tensor(self.action_space.low) if box else None
        high = torch.as_tensor(self.action_space.high) if box else None
        norm = self.vecnorm

        class Greedy(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.policy = policy
                self.norm = (Normalise(norm.obs_rms.mean, norm.obs_rms.var, norm.clip_obs, norm.epsilon)
                             if norm is not None else None)

            def forward(self, obs: torch.Tensor) -> torch.Tensor:
                actions = self.policy._predict(obs if self.norm is None else self.norm(obs), deterministic=True)
                if not box:
                    return actions.reshape(-1)
                return torch.minimum(torch.maximum(actions.reshape(-1, *shape), low), high)

        return Greedy()

    def observe(self, obs, actions, rewards, next_obs, terminated, truncated) -> None:
        raise NotImplementedError("SB3 agents learn inside drive(); the loop never calls observe()")

    def metrics(self) -> dict[str, float]:
        out = dict(self._captured)
        self._captured.clear()
        return out

    def costs(self) -> dict[str, float]:
        if not self._train_calls:
            return {}
        return {"update_ms": round(1000 * self._train_seconds / self._train_calls, 3)}

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"policy": self.model.policy.state_dict(),
                                 "optimizer": self.model.policy.optimizer.state_dict(),
                                 "counters": {"num_timesteps": int(self.model.num_timesteps),
                                              "n_updates": int(getattr(self.model, "_n_updates", 0))}}
        if self.vecnorm is not None:
            state["normalize"] = {name: {"mean": np.asarray(rms.mean, dtype=np.float64),
                                         "var": np.asarray(rms.var, dtype=np.float64), "count": float(rms.count)}
                                  for name, rms in (("obs", self.vecnorm.obs_rms), ("ret", self.vecnorm.ret_rms))}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.policy.load_state_dict({k: torch.as_tensor(v) for k, v in state["policy"].items()})
        self.model.policy.optimizer.load_state_dict(state["optimizer"])
        self.model.num_timesteps = int(state["counters"]["num_timesteps"])
        if self.vecnorm is not None and "normalize" in state:
            for name, rms in (("obs", self.vecnorm.obs_rms), ("ret", self.vecnorm.ret_rms)):
                saved = state["normalize"][name]
                rms.mean, rms.var, rms.count = (np.asarray(saved["mean"]).reshape(np.shape(rms.mean)),
                                                np.asarray(saved["var"]).reshape(np.shape(rms.var)),
                                                float(saved["count"]))

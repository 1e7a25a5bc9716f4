"""`sb3-recurrent-ppo`: sb3-contrib's RecurrentPPO (PPO with an LSTM policy), trained by its own `learn()`, as
a reference agent for partially observable envs.

Defaults are sb3-contrib's; `configs/sb3-recurrent-ppo.yaml` holds RL Zoo's tuned hyperparameters per env
(rl-baselines3-zoo `hyperparams/ppo_lstm.yml`). During training RecurrentPPO keeps its own LSTM states (reset
at each episode start, carried across rollouts); greedy play (`act(explore=False)`: evaluation, videos,
`rlagents.load`) keeps one LSTM state per row of the batch, from call to call, cleared by `reset_memory` at
episode starts and whenever the batch size changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlagents.agents.base import require_zero_start
from rlagents.agents.sb3_ppo import SB3PPOAgent, SB3PPOConfig
from rlagents.config import param
from rlagents.errors import ExportError, UnsupportedSpaceError
from rlagents.networks import MAX_WIDTH

# SB3's NatureCNN (CnnLstmPolicy's extractor, and MultiInputLstmPolicy's for image keys) needs 36×36 pixels.
MIN_IMAGE_SIDE = 36


@dataclass
class SB3RecurrentPPOConfig(SB3PPOConfig):
    """RecurrentPPO's hyperparameters: SB3 PPO's, and the LSTM's (sb3-contrib names)."""

    lstm_hidden_size: int = param(256, "LSTM hidden units", low=1, high=MAX_WIDTH)
    n_lstm_layers: int = param(1, "stacked LSTM layers", low=1, high=8)
    shared_lstm: bool = param(False, "the critic reads the actor's LSTM (no gradient from the value loss)")
    enable_critic_lstm: bool = param(True, "the critic has its own LSTM (ignored with shared_lstm)")


def _image_side(space: gym.Space) -> int | None:
    """The smaller image side of a space SB3 treats as an image (3-D uint8 0–255 Box), else None."""
    from stable_baselines3.common.preprocessing import is_image_space

    if not is_image_space(space):
        return None
    channels_first = int(np.argmin(space.shape)) == 0
    return min(space.shape[1:] if channels_first else space.shape[:2])


class SB3RecurrentPPOAgent(SB3PPOAgent):
    """sb3-contrib RecurrentPPO behind our Agent interface: MlpLstmPolicy on flat observations, CnnLstmPolicy
    on images, MultiInputLstmPolicy on `Dict` observations."""

    name = "sb3-recurrent-ppo"
    config_class = SB3RecurrentPPOConfig

    @classmethod
    def check_spaces(cls, obs_space: gym.Space, action_space: gym.Space, config: Any) -> None:
        if not isinstance(action_space, (gym.spaces.Discrete, gym.spaces.Box)):
            raise UnsupportedSpaceError(f"{cls.name} needs a Discrete or Box action space, got {action_space}")
        parts = obs_space.spaces.values() if isinstance(obs_space, gym.spaces.Dict) else [obs_space]
        for part in parts:
            side = _image_side(part)
            if side is not None and side < MIN_IMAGE_SIDE:
                raise UnsupportedSpaceError(f"{cls.name}'s CNN (SB3's NatureCNN) needs images of at least "
                                            f"{MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} pixels, got {part}")
            flat = isinstance(part, gym.spaces.Discrete) or (isinstance(part, gym.spaces.Box) and len(part.shape) == 1)
            if side is None and not flat:
                raise UnsupportedSpaceError(f"{cls.name} needs flat Box, Discrete, uint8 image or Dict of those "
                                            f"observations, got {part}")
        require_zero_start(cls.name, obs_space, action_space)  # SB3 ignores a Discrete space's start

    def algorithm(self):
        from sb3_contrib import RecurrentPPO

        return RecurrentPPO

    def policy_name(self) -> str:
        if isinstance(self.obs_space, gym.spaces.Dict):
            return "MultiInputLstmPolicy"
        return "CnnLstmPolicy" if _image_side(self.obs_space) is not None else "MlpLstmPolicy"

    def algorithm_kwargs(self) -> dict[str, Any]:
        c = self.config
        kwargs = super().algorithm_kwargs()
        kwargs["policy_kwargs"].update(lstm_hidden_size=c.lstm_hidden_size, n_lstm_layers=c.n_lstm_layers,
                                       shared_lstm=c.shared_lstm,
                                       enable_critic_lstm=c.enable_critic_lstm and not c.shared_lstm)
        return kwargs

    def __init__(self, config: Any, obs_space: gym.Space, action_space: gym.Space, **kwargs: Any):
        super().__init__(config, obs_space, action_space, **kwargs)
        self._lstm_state: tuple[np.ndarray, ...] | None = None  # greedy play's, one row per batch row
        self._starts: np.ndarray | None = None

    def reset_memory(self, starts: np.ndarray | None = None) -> None:
        """Greedy play: the rows in mask `starts` begin new episodes (None: every row, any batch size next)."""
        if starts is None or self._starts is None:
            self._lstm_state, self._starts = None, None
        else:
            self._starts = self._starts | np.asarray(starts, bool)

    def act(self, obs: Any, *, explore: bool) -> np.ndarray:
        if self.vecnorm is not None:
            obs = self.vecnorm.normalize_obs(obs)
        rows = len(next(iter(obs.values())) if isinstance(obs, dict) else obs)
        if self._lstm_state is None or self._lstm_state[0].shape[1] != rows:
            self._lstm_state, self._starts = None, np.ones(rows, bool)
        actions, self._lstm_state = self.model.policy.predict(obs, state=self._lstm_state,
                                                              episode_start=self._starts,
                                                              deterministic=not explore)
        self._starts = np.zeros(rows, bool)
        return actions

    def export_module(self) -> torch.nn.Module:
        raise ExportError(f"{self.name} cannot be exported: its greedy action depends on the LSTM state carried "
                          f"between steps, not on the observation alone")


AGENT = SB3RecurrentPPOAgent

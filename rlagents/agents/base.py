"""The `Agent` interface every agent implements, ours and reference ones alike.

The training loop is the only code that steps environments. An agent acts on a batch of observations (one
row per vector env), observes the resulting transitions and learns on its own schedule, and exposes its
state as nested dicts of tensors, arrays and plain values so checkpoints need no pickle.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch

from rlagents.errors import ExportError, TrainingFault, UnsupportedSpaceError


#: `on_step(rewards, terminated, truncated, done)` after each vector step; `done` is the mask of envs whose
#: episode ended, or None when none did (the common case, kept cheap). Returns False to stop.
StepCallback = Callable[[np.ndarray, np.ndarray, np.ndarray, "np.ndarray | None"], bool]


def require_zero_start(agent: str, obs_space: gym.Space, action_space: gym.Space) -> None:
    """Refuse (UnsupportedSpaceError, one line) `Discrete` action or observation spaces whose values do not start
    at 0, for an agent whose networks index actions and one-hot states from 0 (acting on `Discrete(3,
    start=-1)` with actions 0..2 would send the env actions outside its space)."""
    parts = list(obs_space.spaces.items()) if isinstance(obs_space, gym.spaces.Dict) else [(None, obs_space)]
    named = [("action space", action_space)] + [
        ("observation space" if key is None else f"observation {key!r}", part) for key, part in parts]
    for what, space in named:
        start = int(getattr(space, "start", 0)) if isinstance(space, gym.spaces.Discrete) else 0
        if start:
            raise UnsupportedSpaceError(
                f"{agent} needs Discrete spaces that start at 0; the {what} is {space} (values {start}.."
                f"{start + int(space.n) - 1}): qlearning and planner take any start, or wrap the env so they "
                f"start at 0")


class Agent(ABC):
    """Base class of all agents. Subclasses set `name` and `config_class` and implement the methods below."""

    name: ClassVar[str]
    config_class: ClassVar[type]
    #: True for agents trained by an outside library's own loop (the SB3 reference agents): the training
    #: loop then calls `drive` instead of `act`/`observe`, and still owns evaluation, logging, checkpoints,
    #: progress and the summary through the `on_step` callback.
    drives_env: ClassVar[bool] = False
    #: Top-level keys of `state_dict()` that hold recorded experience (replay, episodes in flight), which may
    #: legitimately contain non-finite values from the env or NaN markers; every other floating value a
    #: checkpoint holds must be finite to load (`rlagents.state_check`).
    recorded_state: ClassVar[frozenset[str]] = frozenset()
    #: True for agents that take action masks (`rlagents.masks`): built with `action_masks=True` for an env
    #: that gives them, such an agent is `masked`, gets `act(obs, explore=..., mask=...)` and
    #: `observe(..., mask=..., next_mask=...)` with bool arrays (batch × actions), and never picks an action
    #: its mask forbids.
    takes_masks: ClassVar[bool] = False

    def __init__(self, config: Any, obs_space: gym.Space, action_space: gym.Space, *, n_envs: int,
                 total_steps: int, device: torch.device, seed: int, action_masks: bool = False):
        self.masked = bool(action_masks) and self.takes_masks
        self.config = config
        self.obs_space = obs_space
        self.action_space = action_space
        self.n_envs = n_envs
        self.total_steps = total_steps
        self.device = device
        self.seed = seed

    @classmethod
    def check_spaces(cls, obs_space: gym.Space, action_space: gym.Space, config: Any) -> None:
        """Raise `UnsupportedSpaceError` saying why this agent cannot handle these spaces."""

    @abstractmethod
    def act(self, obs: np.ndarray, *, explore: bool) -> np.ndarray:
        """Actions for a batch of observations; `explore=False` is the greedy policy used for evaluation."""

    @abstractmethod
    def observe(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, next_obs: np.ndarray,
                terminated: np.ndarray, truncated: np.ndarray) -> None:
        """Record one vector step of experience and learn if due.

        `next_obs` holds the real final observation where an episode ended. Bootstrap where `truncated`,
        never where `terminated`.
        """

    def greedy(self, obs: Any, mask: np.ndarray | None = None) -> np.ndarray:
        """The greedy actions `act(obs, explore=False)`, within `mask` for a masked agent (evaluation's policy)."""
        if self.masked:
            return self.act(obs, explore=False, mask=mask)
        return self.act(obs, explore=False)

    def reset_memory(self, starts: np.ndarray | None = None) -> None:
        """Greedy play of an agent with memory (`recurrent`): the rows of the next `greedy` batch in mask `starts`
        begin new episodes, so their hidden state is cleared; None clears every row, and the next batch may have
        any size. Whoever plays greedy episodes calls it at each episode start (`environments.evaluate` does).
        Training needs no call: `observe` sees the training envs' episodes end. Memoryless agents: nothing."""

    def nonfinite_parameters(self) -> list[str]:
        """Names of the agent's network parameters that hold NaN or inf (the loop checks before every
        checkpoint, so a diverged network is never saved over the last good one)."""
        bad = []
        for attr, module in vars(self).items():
            if isinstance(module, torch.nn.Module):
                bad += [f"{attr}.{name}" for name, p in module.named_parameters() if not torch.isfinite(p).all()]
        return bad

    def drop_episodes(self, envs: np.ndarray) -> None:
        """Forget partial-episode data of the env slots `envs`: their episodes were restarted (a resume that
        could not rebuild them). Agents that keep per-env data between steps must override this."""

    def drive(self, envs: gym.vector.VectorEnv, obs: np.ndarray, steps: int, on_step: StepCallback) -> None:
        """Train for `steps` env steps by stepping the loop's `envs` (already reset; `obs` are their current
        observations), calling `on_step(rewards, terminated, truncated, done)` after every vector step with the
        raw rewards, and stopping as soon as it returns False. Only for agents with `drives_env = True`."""
        raise NotImplementedError(f"{self.name} does not drive envs itself")

    def costs(self) -> dict[str, float]:
        """Per-update or per-decision costs to report in summary.json (e.g. `update_ms`, `planning_ms`)."""
        return {}

    def metrics(self) -> dict[str, float]:
        """Scalars to log (e.g. `losses/td_loss`), aggregated since the previous call."""
        return {}

    def summary_extras(self) -> dict[str, Any]:
        """Extra keys for the run's summary.json (e.g. the planner's `plan_ms_per_step`); JSON values only."""
        return {}

    def inspect(self, env: gym.Env, out_dir: Path) -> list[str]:
        """Lines showing what was learned (printed by `rlagents.evaluate`); may write images into `out_dir`."""
        return []

    def export_module(self) -> torch.nn.Module:
        """The greedy policy as one torch module, for `python -m rlagents.export` (ONNX).

        `forward` takes a batch of raw observations as `act` gets them, as tensors (the space's dtype; int64
        for `Discrete`; a dict of tensors for a `Dict` space) and returns what `act(obs, explore=False)` returns
        (int64 actions of shape (batch,), or float32 of shape (batch, action dims)). Any scaling or
        normalisation of observations happens inside. An agent whose greedy action is no fixed function of
        the observation raises `ExportError` saying why; that is the default. The module may share the agent's
        networks: the exporter reads them on the CPU, in eval mode, and changes nothing else.
        """
        raise ExportError(f"{self.name} cannot be exported: it has no greedy policy graph (an agent opts in by "
                          f"implementing export_module)")

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume or evaluate: nested dicts of tensors, arrays and JSON values."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""


def nonfinite_loss(loss: torch.Tensor, what: str, policy: str, update: int, step: int) -> bool:
    """Whether `loss` is NaN or infinite. Under `policy == "stop"` that raises `TrainingFault` (the loop then
    keeps the last good checkpoint); under "skip" the caller drops the batch. One host sync per call."""
    if torch.isfinite(loss):
        return False
    if policy == "stop":
        raise TrainingFault(f"non-finite {what} ({loss.item()}) at update {update}, env step {step}: check rewards "
                            f"and observations for NaN/inf, or lower lr (--set nonfinite=skip skips such batches)")
    return True

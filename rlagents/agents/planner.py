"""Model-based planner: learn a model of the environment from experience, then plan with it.

Finite observations (`Discrete`, or a `Tuple`/`Dict`/`MultiDiscrete`/`MultiBinary` of discrete parts, indexed
into one state) get a count-based tabular model (`rlagents.models.tabular`) and either value
iteration over it with R-max optimism (`mode: value_iteration`: pairs tried fewer than `rmax_visits` times
are assumed worth `r_max` forever, which drives systematic exploration) or Dyna-Q (`mode: dyna`: Q-learning
on each real step plus `planning_steps` simulated ones drawn from the model). Box observations get an
ensemble of MLPs predicting the change of state, the reward and termination, and act by CEM model-predictive
control over it (`rlagents.models.mpc`). Nothing is read from the env but its spaces and its transitions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch

from rlagents.agents.base import Agent
from rlagents.config import param
from rlagents.discretise import finite_states, is_finite
from rlagents.errors import (
    ConfigError,
    ExportError,
    TrainingFault,
    UnsupportedSpaceError,
)
from rlagents.models.mpc import MPCPlanner
from rlagents.models.tabular import CountModel, dyna_updates, value_iteration
from rlagents.networks import MAX_WIDTH
from rlagents.schedules import LinearSchedule
from rlagents.tabular_views import describe_table

MAX_MODEL_ENTRIES = 20_000_000  # states x actions table entries


@dataclass
class PlannerConfig:
    """Planner hyperparameters. Step counts are env steps summed over vector envs."""

    gamma: float = param(0.99, "discount factor of planning", low=0.0, high=1.0, low_open=True)
    # ---- tabular (Discrete observations)
    mode: Literal["value_iteration", "dyna"] = param(
        "value_iteration", "tabular planning: value iteration with R-max optimism, or Dyna-Q")
    rmax_visits: int = param(10, "visits after which a state-action pair counts as known (R-max's m)", low=1)
    r_max: float = param(1.0, "reward assumed for pairs not yet known (optimism; the env's best reward)")
    replan_every: int = param(1, "env steps between value-iteration replans (also replans when a pair "
                              "becomes known)", low=1)
    sweeps: int = param(50, "most value-iteration sweeps per replan (each replan warm-starts from the last)",
                        low=1)
    planning_steps: int = param(10, "dyna: simulated Q-learning updates per real env step", low=0)
    lr: float = param(0.1, "dyna: Q-learning rate", low=0.0, high=1.0, low_open=True)
    epsilon_start: float = param(1.0, "dyna: initial exploration rate", low=0.0, high=1.0)
    epsilon_end: float = param(0.05, "dyna: final exploration rate", low=0.0, high=1.0)
    epsilon_fraction: float = param(0.3, "dyna: fraction of training over which epsilon decays", low=0.0, high=1.0)
    # ---- continuous (Box observations): dynamics ensemble + CEM model-predictive control
    ensemble: int = param(5, "dynamics models in the ensemble", low=1)
    model_hidden: tuple[int, ...] = param((32, 32), "hidden widths of each dynamics MLP", low=1, high=MAX_WIDTH)
    model_lr: float = param(1.0e-3, "Adam learning rate of the dynamics models", low=0.0, low_open=True)
    weight_decay: float = param(1.0e-5, "Adam weight decay of the dynamics models", low=0.0)
    model_batch: int = param(128, "transitions per member per gradient step", low=1)
    train_every: int = param(250, "env steps between model training rounds", low=1)
    train_steps: int = param(100, "gradient steps per training round", low=1)
    first_train_factor: int = param(3, "the first round trains this many times longer", low=1)
    learning_starts: int = param(250, "env steps of random actions before planning starts", low=0)
    buffer_size: int = param(100_000, "transitions kept for model training", low=1)
    holdout_every: int = param(10, "every n-th transition is held out to measure the model", low=2)
    value_steps: int = param(500, "TD steps per training round of the value net used beyond the horizon "
                             "(0 = no terminal value)", low=0)
    value_hidden: tuple[int, ...] = param((64, 64), "hidden widths of the value net", low=1, high=MAX_WIDTH)
    value_lr: float = param(1.0e-3, "Adam learning rate of the value net", low=0.0, low_open=True)
    value_target_every: int = param(50, "TD steps between copies of the value net's target", low=1)
    value_target: Literal["data", "greedy"] = param(
        "data", "value net's TD targets: the data's (V of the policies that collected it), or the best of that "
        "and the learned model's one-step backups of the other actions, each its members' lowest (V of the "
        "greedy policy)")
    risk: float = param(1.0, "plans score mean − risk · std of the members' returns (pessimism off the data; "
                        "not in training plans with an explore_bonus)", low=0.0)
    explore_bonus: float = param(0.0, "while training, each planned step earns this times the members' "
                                 "disagreement about its state change instead of the risk penalty (directed "
                                 "exploration; 0 = off)", low=0.0)
    explore_decay: float = param(0.0, "fraction of training over which explore_bonus falls linearly to 0 (0 = "
                                 "it stays constant)", low=0.0, high=1.0)
    horizon: int = param(12, "planning horizon in env steps", low=1)
    candidates: int = param(32, "action sequences sampled per CEM iteration (per env)", low=2)
    elites: int = param(4, "best sequences that refit the CEM distribution", low=1)
    cem_iterations: int = param(2, "CEM iterations per env step", low=1)
    plan_every: int = param(1, "continuous model: env steps between CEM searches; the steps between take the "
                            "last plan's next action (1 = search every step)", low=1)
    cem_momentum: float = param(0.1, "weight of the previous distribution in each CEM refit", low=0.0, high=1.0)
    init_std: float = param(0.5, "continuous actions: initial CEM std, in units of half the action range",
                            low=0.0, low_open=True)
    epsilon: float = param(0.0, "discrete actions: rate of random actions while training (after "
                           "learning_starts)", low=0.0, high=1.0)
    action_noise: float = param(0.1, "continuous actions: Gaussian noise added while training, in units of "
                                "half the action range", low=0.0)
    nonfinite: Literal["stop", "skip"] = param("stop", "on a NaN/infinite reward or observation: stop training "
                                               "(the last good checkpoint stays) or skip that transition")

    def validate(self) -> None:
        if self.elites > self.candidates:
            raise ConfigError(f"elites ({self.elites}) must not exceed candidates ({self.candidates})")


def horizon(gamma: float) -> float:
    """1 / (1 − γ), the weight of a reward received forever; 10,000 steps when undiscounted (γ = 1)."""
    return 1.0 / (1.0 - gamma) if gamma < 1.0 else 1e4


class TabularPlanner:
    """Count model + value iteration with R-max optimism, or Dyna-Q, over a finite observation space."""

    def __init__(self, config: PlannerConfig, obs_space: gym.Space, action_space: gym.spaces.Discrete,
                 *, total_steps: int, seed: int):
        c = self.config = config
        self.n_states, self.indexer = finite_states(obs_space, "planner")
        self.n_actions = int(action_space.n)
        self.obs_start = int(obs_space.start) if self.indexer is None else 0
        self.action_start = int(action_space.start)
        self.model = CountModel(self.n_states, self.n_actions)
        self.rng = np.random.default_rng(seed)
        # fixed tiny noise breaks ties between equal values at random but reproducibly
        self.tiebreak = 1e-9 * self.rng.random((self.n_states, self.n_actions))
        self.optimistic_value = c.r_max * horizon(c.gamma)
        self.q = np.full((self.n_states, self.n_actions), self.optimistic_value if c.mode == "value_iteration"
                         else 0.0)
        self.v = self.q.max(axis=1)
        self.greedy_q: np.ndarray | None = None  # exploitation values, solved lazily at evaluation
        self.greedy_v = np.zeros(self.n_states)
        self.epsilon = LinearSchedule(c.epsilon_start, c.epsilon_end, int(c.epsilon_fraction * total_steps))
        self.steps = 0
        self.since_replan = 0
        self.plan_time = {"train": 0.0, "eval": 0.0}
        self.plan_steps = {"train": 0, "eval": 0}
        self._sweeps = self._replans = 0
        self._td = 0.0
        self._td_n = 0

    def states(self, obs: Any) -> np.ndarray:
        if self.indexer is not None:
            return self.indexer(obs)
        return np.asarray(obs, dtype=np.int64).reshape(-1) - self.obs_start

    def act(self, obs: np.ndarray, explore: bool) -> np.ndarray:
        s = self.states(obs)
        if not explore:
            t0 = time.perf_counter()
            q = self.q if self.config.mode == "dyna" else self.solve_greedy()
            self.plan_time["eval"] += time.perf_counter() - t0
            self.plan_steps["eval"] += len(s)
            actions = (q[s] + self.tiebreak[s]).argmax(axis=1)
        elif self.config.mode == "dyna":
            actions = (self.q[s] + self.tiebreak[s]).argmax(axis=1)
            random = self.rng.random(len(s)) < self.epsilon(self.steps)
            actions = np.where(random, self.rng.integers(self.n_actions, size=len(s)), actions)
        else:
            actions = (self.q[s] + self.tiebreak[s]).argmax(axis=1)
        return actions.astype(np.int64) + self.action_start

    def solve_greedy(self) -> np.ndarray:
        """Q of the learned model without optimism; untried pairs get a pessimistic value, so the greedy
        policy only takes actions it has seen."""
        if self.greedy_q is None:
            rewards, successors, probs = self.model.estimates()
            tried = self.model.visits > 0
            r_min = float(rewards[tried].min()) if tried.any() else 0.0
            pessimistic = min(r_min, 0.0) * horizon(self.config.gamma) - 1.0
            self.greedy_q, _ = value_iteration(rewards, successors, probs, self.config.gamma, v0=self.greedy_v,
                                               fixed=~tried, fixed_value=pessimistic, tol=1e-6)
            self.greedy_v = self.greedy_q.max(axis=1)
        return self.greedy_q

    def observe(self, obs, actions, rewards, next_obs, terminated, truncated, skip: np.ndarray) -> None:
        c = self.config
        s, s2 = self.states(obs), self.states(next_obs)
        a = np.asarray(actions, dtype=np.int64).reshape(-1) - self.action_start
        terminated = np.asarray(terminated, dtype=bool)
        rewards = np.asarray(rewards, dtype=np.float64)
        if skip.any():  # transitions the agent was told to skip (non-finite rewards): learn from the others
            self.steps += int(skip.sum())
            keep = ~skip
            s, s2, a, rewards, terminated = s[keep], s2[keep], a[keep], rewards[keep], terminated[keep]
        newly_known = bool((self.model.visits[s, a] == c.rmax_visits - 1).any())
        self.model.update(s, a, rewards, s2, terminated)
        self.greedy_q = None
        self.steps += len(s)
        self.since_replan += len(s)
        t0 = time.perf_counter()
        if c.mode == "dyna":
            self._td += dyna_updates(self.q, s, a, rewards, s2, terminated, c.gamma, c.lr)
            self._td_n += 1
            if c.planning_steps:
                visited = np.flatnonzero(self.model.visits.reshape(-1) > 0)
                pairs = visited[self.rng.integers(len(visited), size=c.planning_steps)]
                ps, pa = np.divmod(pairs, self.n_actions)
                ps2, pterm = self.model.sample_next(ps, pa, self.rng)
                mean_r = self.model.reward_sums[ps, pa] / self.model.visits[ps, pa]
                dyna_updates(self.q, ps, pa, mean_r, ps2, pterm, c.gamma, c.lr)
        elif newly_known or self.since_replan >= c.replan_every:
            self.replan()
        self.plan_time["train"] += time.perf_counter() - t0
        self.plan_steps["train"] += len(s)

    def replan(self) -> None:
        """Warm-started value iteration on the learned model with R-max optimism for unknown pairs."""
        rewards, successors, probs = self.model.estimates()
        unknown = self.model.visits < self.config.rmax_visits
        self.q, sweeps = value_iteration(rewards, successors, probs, self.config.gamma, v0=self.v, fixed=unknown,
                                         fixed_value=self.optimistic_value, tol=1e-4, max_sweeps=self.config.sweeps)
        self.v = self.q.max(axis=1)
        self.since_replan = 0
        self._sweeps += sweeps
        self._replans += 1

    def metrics(self) -> dict[str, float]:
        out = {"model/known_pairs": float((self.model.visits >= self.config.rmax_visits).mean()),
               "model/visited_pairs": float((self.model.visits > 0).mean())}
        if self._replans:
            out["planning/sweeps_per_replan"] = self._sweeps / self._replans
            self._sweeps = self._replans = 0
        if self._td_n:
            out["losses/td_abs_error"] = self._td / self._td_n
            self._td, self._td_n = 0.0, 0
        if self.config.mode == "dyna":
            out["charts/epsilon"] = self.epsilon(self.steps)
        return out

    def plan_ms(self) -> dict[str, float | None]:
        return {f"plan_ms_per_step{'' if mode == 'train' else '_eval'}":
                (round(1000.0 * self.plan_time[mode] / self.plan_steps[mode], 4) if self.plan_steps[mode] else None)
                for mode in ("train", "eval")}

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "q": self.q.copy(), "v": self.v.copy(),
                "tiebreak": self.tiebreak.copy(),
                "counters": {"steps": self.steps, "since_replan": self.since_replan},
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.q = np.asarray(state["q"], dtype=np.float64).copy()
        self.v = np.asarray(state["v"], dtype=np.float64).copy()
        if "tiebreak" in state:  # absent from checkpoints of the first version: keep this seed's table
            self.tiebreak = np.asarray(state["tiebreak"], dtype=np.float64).copy()
        if self.q.shape != (self.n_states, self.n_actions):
            raise ValueError(f"checkpoint Q has shape {self.q.shape}, need {(self.n_states, self.n_actions)}")
        self.steps = int(state["counters"]["steps"])
        self.since_replan = int(state["counters"]["since_replan"])
        self.rng.bit_generator.state = state["rng"]
        self.greedy_q = None
        self.greedy_v = np.zeros(self.n_states)


class PlannerAgent(Agent):
    """Learns a model of the env from its transitions and plans with it: tabular for Discrete observations,
    a dynamics ensemble with CEM model-predictive control for Box observations."""

    name = "planner"
    config_class = PlannerConfig
    recorded_state = frozenset({"buffer", "open"})

    @classmethod
    def check_spaces(cls, obs_space: gym.Space, action_space: gym.Space, config: PlannerConfig) -> None:
        if is_finite(obs_space):
            if not isinstance(action_space, gym.spaces.Discrete):
                raise UnsupportedSpaceError(f"planner's tabular model needs Discrete actions with finite "
                                            f"observations, got {action_space}")
            n_states, _ = finite_states(obs_space, cls.name)
            if n_states * int(action_space.n) > MAX_MODEL_ENTRIES:
                raise ConfigError(f"a tabular model of {n_states} states x {action_space.n} actions is too "
                                  f"large (limit {MAX_MODEL_ENTRIES:,} entries)")
            return
        if not (isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1):
            raise UnsupportedSpaceError(f"planner needs finite observations (Discrete, or a Tuple/Dict/MultiDiscrete/"
                                        f"MultiBinary of discrete parts) or a flat Box vector, got {obs_space}")
        if not isinstance(action_space, (gym.spaces.Discrete, gym.spaces.Box)):
            raise UnsupportedSpaceError(f"planner needs Discrete or Box actions, got {action_space}")
        if isinstance(action_space, gym.spaces.Box) and not (np.isfinite(action_space.low).all()
                                                             and np.isfinite(action_space.high).all()):
            raise UnsupportedSpaceError(f"planner needs bounded continuous actions to sample plans, got {action_space}")

    def __init__(self, config: PlannerConfig, obs_space: gym.Space, action_space: gym.Space, **kwargs: Any):
        super().__init__(config, obs_space, action_space, **kwargs)
        if is_finite(obs_space):
            self.impl: TabularPlanner | MPCPlanner = TabularPlanner(
                config, obs_space, action_space, total_steps=self.total_steps, seed=self.seed)
        else:
            self.impl = MPCPlanner(config, obs_space, action_space, n_envs=self.n_envs, seed=self.seed,
                                   total_steps=self.total_steps)
        self.skipped = 0  # transitions dropped for a non-finite reward or observation (nonfinite: skip)

    def act(self, obs: np.ndarray, *, explore: bool) -> np.ndarray:
        return self.impl.act(obs, explore)

    def observe(self, obs, actions, rewards, next_obs, terminated, truncated) -> None:
        bad = self._nonfinite_rows(obs, rewards, next_obs)
        if bad.any():
            if self.config.nonfinite == "stop":
                i = int(np.flatnonzero(bad)[0])
                what = f"reward ({rewards[i]})" if not np.isfinite(rewards[i]) else "observation"
                raise TrainingFault(f"non-finite {what} from env {i} at env step {self.impl.steps}: the model was "
                                    f"not updated with it (--set nonfinite=skip skips such transitions)")
            self.skipped += int(bad.sum())
            rewards = np.where(bad, 0.0, rewards)  # placeholders: the transition is not learned from
        self.impl.observe(obs, actions, rewards, next_obs, terminated, truncated, skip=bad)

    def _nonfinite_rows(self, obs, rewards, next_obs) -> np.ndarray:
        """Envs whose transition holds a NaN/inf reward or (Box) observation: one would poison the model for good
        (a tabular model's reward sums, or every weight of the dynamics ensemble through its normalisers)."""
        bad = ~np.isfinite(np.asarray(rewards, dtype=np.float64))
        if isinstance(self.impl, MPCPlanner):
            b = len(bad)
            bad |= ~np.isfinite(np.asarray(obs, dtype=np.float64).reshape(b, -1)).all(axis=1)
            bad |= ~np.isfinite(np.asarray(next_obs, dtype=np.float64).reshape(b, -1)).all(axis=1)
        return bad

    def nonfinite_parameters(self) -> list[str]:
        impl = self.impl
        if isinstance(impl, TabularPlanner):
            return [name for name, a in (("q", impl.q), ("model.reward_sums", impl.model.reward_sums))
                    if not np.isfinite(a).all()]
        bad = []
        for name, module in (("model", impl.model.net), ("value", impl.value)):
            if module is not None:
                bad += [f"{name}.{key}" for key, p in module.named_parameters() if not torch.isfinite(p).all()]
        return bad

    def metrics(self) -> dict[str, float]:
        return {**self.impl.metrics(), "charts/skipped_updates": float(self.skipped)}

    def inspect(self, env: gym.Env, out_dir: Path) -> list[str]:
        if isinstance(self.impl, TabularPlanner):  # the greedy policy of the learned model, as qlearning shows it
            q = self.impl.q if self.config.mode == "dyna" else self.impl.solve_greedy()
            known = (self.impl.model.visits >= self.config.rmax_visits).mean()
            summary = (f"learned model: {self.impl.model.visits.sum():,} transitions, {known:.0%} of state-action "
                       f"pairs known")
            return [summary] + describe_table(q, env, out_dir, indexer=self.impl.indexer,
                                              visited=self.impl.model.visits.sum(axis=1) > 0)
        summary = (f"learned model: {self.impl.buffer.size:,} transitions, {self.impl.trained_rounds} training "
                   f"rounds, {self.impl.model.members} members")
        return [summary]

    def export_module(self):
        """Greedy policy for `rlagents.export`, tabular model only: the table `act` takes its argmax of (the
        learned model's greedy solution, or Dyna's Q, plus the fixed tie-break noise). It is solved once from
        the model and evaluation does not change it, so a table lookup is exactly the greedy policy."""
        if not isinstance(self.impl, TabularPlanner):
            raise ExportError("planner cannot be exported with a continuous model: each action is a CEM search "
                              "over sampled action sequences in the learned model, warm-started from the previous "
                              "step's plan, so it is no fixed function of the observation that a graph could hold")
        from rlagents.graphs import table_policy

        impl = self.impl
        if impl.indexer is not None:
            raise ExportError(f"planner cannot be exported over structured observations ({self.obs_space}): the "
                              f"exporter has no graph form of their index into the table")
        q = impl.q if self.config.mode == "dyna" else impl.solve_greedy()
        return table_policy(q + impl.tiebreak, obs_start=impl.obs_start, action_start=impl.action_start)

    def summary_extras(self) -> dict[str, Any]:
        return self.impl.plan_ms()

    def costs(self) -> dict[str, float]:
        # the compare report's column: planning milliseconds per training decision (env step)
        return {"planning_ms": self.impl.plan_ms().get("plan_ms_per_step")}

    def state_dict(self) -> dict[str, Any]:
        return self.impl.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.impl.load_state_dict(state)


AGENT = PlannerAgent

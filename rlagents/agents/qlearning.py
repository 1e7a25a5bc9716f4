"""Tabular value-based agents: Q-learning, SARSA, expected SARSA and double Q-learning in one module.

The update rule, learning-rate schedule and exploration strategy are config switches. Observations must be
discrete (`Discrete`, or `Tuple`/`Dict`/`MultiDiscrete`/`MultiBinary` of discrete parts, indexed into one
state), or a Box the config discretises (`bins`, `clip_low`, `clip_high`), on one grid or, with `tilings`,
by tile coding: Q(s, a) is then the sum of one entry per offset grid (`TiledTable`). The agent learns on every
env step, so its hot path works on Python lists and floats, which for a handful of actions is several times
faster than NumPy's per-call overhead; tables become NumPy arrays only in checkpoints and logs.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from rlagents.agents.base import Agent
from rlagents.config import param
from rlagents.discretise import (
    Discretiser,
    SpaceIndexer,
    TileCoder,
    discretiser_for,
    finite_states,
)
from rlagents.errors import (
    ConfigError,
    ExportError,
    TrainingFault,
    UnsupportedSpaceError,
)
from rlagents.exploration import Decay, legal_argmax, make_exploration
from rlagents.masks import legal_actions
from rlagents.tabular_views import describe_table

MAX_TABLE_ENTRIES = 20_000_000  # a Python-list table of this size already takes a few GB


@dataclass
class QLearningConfig:
    """Tabular agent hyperparameters. Step counts are env steps summed over vector envs."""

    update: Literal["qlearning", "sarsa", "expected_sarsa", "double"] = param(
        "qlearning", "update rule: Q-learning, SARSA, expected SARSA or double Q-learning")
    gamma: float = param(0.99, "discount factor", low=0.0, high=1.0)
    lr: float = param(0.1, "learning rate (its initial value with lr_schedule=visits)", low=0.0, high=1.0,
                      low_open=True)
    lr_schedule: Literal["constant", "visits"] = param(
        "constant", "constant, or visits: lr / N(s,a)^lr_power after the N-th visit of (s,a)")
    lr_power: float = param(1.0, "decay exponent of lr_schedule=visits (0.5-1 keeps Q-learning convergent)",
                            low=0.0, high=1.0, low_open=True)
    lr_min: float = param(0.0, "floor of the decaying learning rate", low=0.0, high=1.0)
    q_init: float = param(0.0, "initial action value (optimistic values explore)")
    q_noise: float = param(1.0e-6, "uniform noise added to initial values so greedy ties break at random",
                           low=0.0)
    exploration: Literal["epsilon", "boltzmann", "ucb"] = param(
        "epsilon", "exploration: epsilon-greedy, Boltzmann softmax or a UCB count bonus")
    epsilon_start: float = param(1.0, "initial exploration rate", low=0.0, high=1.0)
    epsilon_end: float = param(0.05, "final exploration rate", low=0.0, high=1.0)
    epsilon_fraction: float = param(0.5, "fraction of training over which epsilon decays", low=0.0, high=1.0)
    epsilon_decay: Decay = param("linear", "epsilon schedule: linear, or exponential (1% of the gap left at "
                                 "the end of epsilon_fraction)")
    temperature_start: float = param(1.0, "initial Boltzmann temperature (in units of Q)", low=0.0, low_open=True)
    temperature_end: float = param(0.01, "final Boltzmann temperature", low=0.0, low_open=True)
    temperature_fraction: float = param(0.5, "fraction of training over which the temperature decays",
                                        low=0.0, high=1.0)
    temperature_decay: Decay = param("exponential", "temperature schedule: linear or exponential")
    ucb_c: float = param(1.0, "UCB bonus weight c in Q + c·sqrt(ln N(s) / N(s,a))", low=0.0)
    bins: tuple[int, ...] = param((), "bins per Box observation dimension (one value = all dimensions)", low=1)
    clip_low: tuple[float, ...] = param((), "lower clip per Box dimension (default: the space's bound)")
    clip_high: tuple[float, ...] = param((), "upper clip per Box dimension (default: the space's bound)")
    tilings: int = param(1, "Box observations: 1 = one grid of `bins`; more = tile coding, that many grids "
                         "of `bins` tiles, each offset, whose entries are summed into Q (updated by lr/tilings)",
                         low=1, high=64)
    nonfinite: Literal["stop", "skip"] = param("stop", "on a NaN/infinite reward: stop training (the last good "
                                               "checkpoint stays) or skip that transition")

    def validate(self) -> None:
        if self.lr_min > self.lr:
            raise ConfigError(f"lr_min ({self.lr_min}) must not exceed lr ({self.lr})")


def state_count(obs_space: gym.Space, config: QLearningConfig,
                agent: str = "qlearning") -> tuple[int, Discretiser | SpaceIndexer | None]:
    """Number of table rows for `obs_space`, and its map to rows: a discretiser for Box spaces, an indexer
    for finite structured ones (Tuple, Dict, MultiDiscrete, MultiBinary), None for Discrete ones."""
    if isinstance(obs_space, gym.spaces.Box):
        disc = discretiser_for(obs_space, config.bins, config.clip_low, config.clip_high, agent, config.tilings)
        return disc.n_states, disc
    if config.tilings > 1:
        raise ConfigError(f"tilings: tile coding is for Box observations; {obs_space} is indexed exactly "
                          f"(use tilings=1)")
    return finite_states(obs_space, agent)  # refuses spaces with continuous parts


class TiledTable:
    """Action values under tile coding: one row per tile, and a state is a tuple of tiles (one per tiling)
    whose rows are summed. Indexed by a state it gives the summed row, as a plain table gives its row, so the
    update rules read both alike; `rows` is the table that learns and is saved."""

    def __init__(self, rows: list[list[float]], tilings: int):
        self.rows = rows
        self.scale = 1.0 / tilings  # counts are averaged over the tiles

    def __getitem__(self, tiles: tuple[int, ...]) -> list[float]:
        rows = self.rows
        return [sum(values) for values in zip(*[rows[t] for t in tiles])]

    def mean(self, tiles: tuple[int, ...]) -> list[float]:
        """The rows' mean instead of their sum (visit counts of a state)."""
        return [v * self.scale for v in self[tiles]]


class QLearningAgent(Agent):
    """A Q-table (two for double Q-learning) learned online from every transition."""

    name = "qlearning"
    config_class = QLearningConfig
    takes_masks = True

    @classmethod
    def check_spaces(cls, obs_space: gym.Space, action_space: gym.Space, config: QLearningConfig) -> None:
        if not isinstance(action_space, gym.spaces.Discrete):
            raise UnsupportedSpaceError(
                f"qlearning needs a Discrete action space, got {action_space}: a Q-table has one column per "
                f"action (use reinforce for continuous actions)")
        n_states, _ = state_count(obs_space, config, cls.name)
        if n_states * int(action_space.n) > MAX_TABLE_ENTRIES:
            raise ConfigError(f"a Q-table of {n_states} states x {action_space.n} actions is too large "
                              f"(limit {MAX_TABLE_ENTRIES:,} entries): use fewer bins")

    def __init__(self, config: QLearningConfig, obs_space: gym.Space, action_space: gym.spaces.Discrete,
                 **kwargs: Any):
        super().__init__(config, obs_space, action_space, **kwargs)
        c = config
        self.n_states, self.discretiser = state_count(obs_space, c, self.name)
        self.n_actions = int(action_space.n)
        self.obs_start = int(obs_space.start) if isinstance(obs_space, gym.spaces.Discrete) else 0
        self.action_start = int(action_space.start)
        init_rng = np.random.default_rng(self.seed)
        tables = 2 if c.update == "double" else 1
        self.tiled = isinstance(self.discretiser, TileCoder)
        # q_init is Q's initial value: with tile coding a state's value is the sum of `tilings` entries
        init = c.q_init / c.tilings if self.tiled else c.q_init
        # Python lists, not arrays: see the module docstring.
        self.tables = self._wrap([(init + c.q_noise * init_rng.random((self.n_states, self.n_actions))).tolist()
                                  for _ in range(tables)])
        self.q = self.tables[0]
        self.counts = [[0] * self.n_actions for _ in range(self.n_states)]
        if self.tiled:
            self._learn = self._learn_tiled
        self.rng = random.Random(self.seed)
        self.exploration = make_exploration(
            c.exploration, self.rng, total_steps=self.total_steps, epsilon_start=c.epsilon_start,
            epsilon_end=c.epsilon_end, epsilon_fraction=c.epsilon_fraction, epsilon_decay=c.epsilon_decay,
            temperature_start=c.temperature_start, temperature_end=c.temperature_end,
            temperature_fraction=c.temperature_fraction, temperature_decay=c.temperature_decay, ucb_c=c.ucb_c)
        self.steps = 0
        # SARSA's next action, drawn when its update needs it and then taken by the next `act`: -1 = none.
        self.pending = [-1] * self.n_envs
        self._update = {"qlearning": self._q_learning, "sarsa": self._sarsa,
                        "expected_sarsa": self._expected_sarsa, "double": self._double}[c.update]
        # Logged statistics, accumulated per step so `metrics` never scans a table that may be large.
        self._td_abs = self._lr_sum = self._q_sum = 0.0
        self._updates = 0
        self._visited = 0
        self.skipped_updates = 0  # transitions dropped for a non-finite reward (nonfinite: skip)

    # ------------------------------------------------------------ acting

    def _wrap(self, tables: list[list[list[float]]]) -> list:
        """The tables as the update rules index them: as they are, or as `TiledTable`s under tile coding."""
        return [TiledTable(t, self.config.tilings) for t in tables] if self.tiled else tables

    def _rows(self) -> list[list[list[float]]]:
        """The tables' learned entries (per tile under tile coding), as saved."""
        return [t.rows for t in self.tables] if self.tiled else self.tables

    def states(self, obs: np.ndarray) -> list:
        """Table row of each observation in a batch (a tuple of rows, one per tiling, under tile coding)."""
        if self.tiled:
            return [tuple(tiles) for tiles in self.discretiser(obs.reshape(len(obs), -1)).tolist()]
        if isinstance(self.discretiser, SpaceIndexer):
            return self.discretiser(obs).tolist()
        if self.discretiser is not None:
            return self.discretiser(obs.reshape(len(obs), -1)).tolist()
        if self.obs_start:
            return (obs - self.obs_start).tolist()
        return obs.tolist()

    def values(self, state: int) -> list[float]:
        """Action values of `state` that acting uses: the table row, or both tables' sum for double Q."""
        if len(self.tables) == 1:
            return self.q[state]
        return [a + b for a, b in zip(self.tables[0][state], self.tables[1][state])]

    def act(self, obs: np.ndarray, *, explore: bool, mask: np.ndarray | None = None) -> np.ndarray:
        states = self.states(obs)
        legal = [legal_actions(m) for m in mask] if mask is not None else [None] * len(states)
        if not explore:
            actions = [legal_argmax(self.values(s), legal[i]) for i, s in enumerate(states)]
        else:
            actions = []
            for i, s in enumerate(states):
                a = self.pending[i]  # SARSA's next action was drawn within the same mask
                if a < 0:
                    a = self.exploration.choose_legal(self.values(s), self._counts(s), self.steps, legal[i])
                else:
                    self.pending[i] = -1
                actions.append(a)
        out = np.array(actions, dtype=np.int64)
        if self.action_start:
            out += self.action_start
        return out

    def _counts(self, s) -> list:
        """Visit counts of state `s`'s actions: its row, or its tiles' mean under tile coding."""
        if self.tiled:
            return [sum(n) / len(s) for n in zip(*[self.counts[t] for t in s])]
        return self.counts[s]

    def export_module(self):
        """Greedy policy for `rlagents.export`: observation → table row (the discretiser's bins as graph ops, or
        the discrete state) → argmax of the row (of both tables' sum for double Q-learning, as `act` does)."""
        from rlagents.graphs import table_policy

        if isinstance(self.discretiser, SpaceIndexer):
            raise ExportError(f"qlearning cannot be exported over structured observations ({self.obs_space}): "
                              f"the exporter has no graph form of their index into the table")
        table = np.sum([np.asarray(t, dtype=np.float64) for t in self._rows()], axis=0)
        return table_policy(table, discretiser=self.discretiser, obs_start=self.obs_start,
                            action_start=self.action_start)

    # ------------------------------------------------------------ learning

    def observe(self, obs, actions, rewards, next_obs, terminated, truncated, *, mask=None, next_mask=None) -> None:
        """Learn from each env's transition; with `next_mask`, targets and SARSA's next action range over the
        next state's legal actions only."""
        states, next_states = self.states(obs), self.states(next_obs)
        next_legal = [legal_actions(m) for m in next_mask] if next_mask is not None else None
        acts = (actions - self.action_start).tolist() if self.action_start else actions.tolist()
        rews, terms, truncs = rewards.tolist(), terminated.tolist(), truncated.tolist()
        c = self.config
        skip = self._nonfinite_rewards(rews) if not math.isfinite(sum(rews)) else ()
        decaying = c.lr_schedule == "visits"
        for i in range(len(states)):
            if skip and i in skip:
                self.steps += 1
                continue
            s, a = states[i], acts[i]
            if self.tiled:
                visits = self._count_tiles(s, a)
            else:
                row = self.counts[s]
                row[a] += 1
                if row[a] == 1 and sum(row) == 1:  # first visit of s: counted here, not by scanning the table
                    self._visited += 1
                visits = row[a]
            lr = max(c.lr_min, c.lr / visits ** c.lr_power) if decaying else c.lr
            self._update(i, s, a, rews[i], next_states[i], terms[i], truncs[i], lr,
                         next_legal[i] if next_legal is not None else None)
            self.steps += 1

    def _count_tiles(self, tiles: tuple[int, ...], a: int) -> float:
        """Count a visit of (tiles, a) in each tile; returns the tiles' mean count, N(s, a) under tile coding."""
        total = 0
        for t in tiles:
            row = self.counts[t]
            row[a] += 1
            if row[a] == 1 and sum(row) == 1:
                self._visited += 1
            total += row[a]
        return total / len(tiles)

    def _nonfinite_rewards(self, rewards: list[float]) -> set[int]:
        """Envs whose reward is NaN/inf (one would poison the table for good): stop, or skip them."""
        bad = {i for i, r in enumerate(rewards) if not math.isfinite(r)}
        if self.config.nonfinite == "stop":
            i = min(bad)
            raise TrainingFault(f"non-finite reward ({rewards[i]}) from env {i} at env step {self.steps}: the "
                                f"Q-table was not updated with it (--set nonfinite=skip skips such transitions)")
        self.skipped_updates += len(bad)
        return bad

    def _learn(self, table: list[list[float]], s: int, a: int, target: float, lr: float) -> None:
        row = table[s]
        delta = target - row[a]
        row[a] += lr * delta
        self._q_sum += row[a]
        self._td_abs += abs(delta)
        self._lr_sum += lr
        self._updates += 1

    def _learn_tiled(self, table: TiledTable, s: tuple[int, ...], a: int, target: float, lr: float) -> None:
        # semi-gradient step on the sum of the tiles' entries: each moves by lr/tilings of the TD error
        rows = table.rows
        q = 0.0
        for t in s:
            q += rows[t][a]
        delta = target - q
        step = lr * delta * table.scale
        for t in s:
            rows[t][a] += step
        self._q_sum += q + lr * delta
        self._td_abs += abs(delta)
        self._lr_sum += lr
        self._updates += 1

    def _q_learning(self, i, s, a, r, s2, terminated, truncated, lr, legal2) -> None:
        if terminated:
            self._learn(self.q, s, a, r, lr)
            return
        row = self.q[s2]
        best = max(row) if legal2 is None else max(row[b] for b in legal2)
        self._learn(self.q, s, a, r + self.config.gamma * best, lr)

    def _sarsa(self, i, s, a, r, s2, terminated, truncated, lr, legal2) -> None:
        if terminated:
            self._learn(self.q, s, a, r, lr)
            return
        a2 = self.exploration.choose_legal(self.q[s2], self._counts(s2), self.steps, legal2)
        if not truncated:  # after truncation the next `act` sees a reset state, not s2
            self.pending[i] = a2
        self._learn(self.q, s, a, r + self.config.gamma * self.q[s2][a2], lr)

    def _expected_sarsa(self, i, s, a, r, s2, terminated, truncated, lr, legal2) -> None:
        if terminated:
            self._learn(self.q, s, a, r, lr)
            return
        expected = self.exploration.expected_legal(self.q[s2], self._counts(s2), self.steps, legal2)
        self._learn(self.q, s, a, r + self.config.gamma * expected, lr)

    def _double(self, i, s, a, r, s2, terminated, truncated, lr, legal2) -> None:
        # A fair coin picks the table to update; it chooses s2's action, the other table values it.
        learner, judge = self.tables if self.rng.random() < 0.5 else self.tables[::-1]
        if terminated:
            self._learn(learner, s, a, r, lr)
        else:
            self._learn(learner, s, a, r + self.config.gamma * judge[s2][legal_argmax(learner[s2], legal2)], lr)

    # ------------------------------------------------------------ inspection

    def q_table(self) -> np.ndarray:
        """The learned action values as an array (states x actions); the mean of both tables for double Q.
        Under tile coding, Q at the centres of the cells of one unshifted grid of `bins` (its rows ordered as
        a `Discretiser`'s with those bins)."""
        if not self.tiled:
            return np.mean([np.asarray(t) for t in self.tables], axis=0)
        grid = self.discretiser.grid
        axes = [grid.low[d] + (np.arange(b) + 0.5) / grid.scale[d] for d, b in enumerate(grid.bins)]
        centres = np.stack([m.ravel() for m in np.meshgrid(*axes, indexing="ij")], axis=1)  # row-major
        states = self.states(centres)
        return np.mean([np.asarray([t[s] for s in states]) for t in self.tables], axis=0)

    def inspect(self, env: gym.Env, out_dir: Path) -> list[str]:
        if isinstance(self.discretiser, SpaceIndexer):
            visited = np.asarray(self.counts).sum(axis=1) > 0
            return describe_table(self.q_table(), env, out_dir, indexer=self.discretiser, visited=visited)
        bins = tuple(int(b) for b in self.discretiser.bins) if self.discretiser is not None else None
        return describe_table(self.q_table(), env, out_dir, bins)

    def metrics(self) -> dict[str, float]:
        out = self.exploration.metrics(self.steps)
        out["charts/skipped_updates"] = float(self.skipped_updates)
        if self._updates:
            out["losses/td_abs_error"] = self._td_abs / self._updates
            out["charts/learning_rate"] = self._lr_sum / self._updates
            out["values/mean_q"] = self._q_sum / self._updates  # of the entries just updated, as DQN logs it
            self._td_abs = self._lr_sum = self._q_sum = 0.0
            self._updates = 0
        out["charts/states_visited"] = self._visited / self.n_states
        return out

    # ------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss = self.rng.getstate()
        return {"q": [np.asarray(t, dtype=np.float64) for t in self._rows()],
                "counts": np.asarray(self.counts, dtype=np.int64),
                "steps": self.steps, "pending": list(self.pending),
                "rng": {"version": version, "internal": np.asarray(internal, dtype=np.int64), "gauss": gauss}}

    def drop_episodes(self, envs: np.ndarray) -> None:
        for i in envs:
            self.pending[int(i)] = -1  # SARSA's chosen next action belonged to the dropped episode

    def load_state_dict(self, state: dict[str, Any]) -> None:
        tables = [np.asarray(t, dtype=np.float64) for t in state["q"]]
        expected = (self.n_states, self.n_actions)
        if len(tables) != len(self.tables) or any(t.shape != expected for t in tables):  # rows: tiles if tiled
            raise ValueError(f"checkpoint holds {len(tables)} table(s) of shape "
                             f"{tables[0].shape if tables else None}; this agent needs {len(self.tables)} "
                             f"of shape {expected}")
        self.tables = self._wrap([t.tolist() for t in tables])
        self.q = self.tables[0]
        counts = np.asarray(state["counts"], dtype=np.int64)
        self.counts = counts.tolist()
        self._visited = int((counts.sum(axis=1) > 0).sum())
        self.steps = int(state["steps"])
        pending = [int(a) for a in state["pending"]]
        self.pending = pending if len(pending) == self.n_envs else [-1] * self.n_envs
        rng = state["rng"]
        self.rng.setstate((int(rng["version"]), tuple(int(x) for x in np.asarray(rng["internal"])), rng["gauss"]))


AGENT = QLearningAgent

"""Model-predictive control over a learned dynamics ensemble: the continuous-state half of the planner.

Every env step, CEM searches action sequences of `horizon` steps for all envs of the batch at once; each
candidate is rolled out through every ensemble member (particles), its score is the members' mean of the
discounted predicted return, with predicted rewards weighted by the predicted probability of not having
terminated yet, plus a learned value of the last state (`value_steps` > 0), minus `risk` times the members'
spread. The first action is executed; the distribution is shifted by one step to warm-start the
next plan. Transitions go to a preallocated buffer (every `holdout_every`-th one held out to measure the
model); the ensemble retrains every `train_every` env steps.
"""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlagents.models.cem import cem_categorical, cem_gaussian
from rlagents.models.dynamics import Backups, DynamicsEnsemble, ValueNet
from rlagents.schedules import LinearSchedule
from rlagents.validate import require_memory


PLAN_CHECK_EVERY = 10  # training steps between planned-vs-realised return checks
GREEDY_SAMPLES = 8  # continuous actions: random alternatives per state in `value_target: greedy` backups


class TransitionBuffer:
    """Preallocated arrays of (obs, action features, reward, next obs, terminated); grows until full."""

    def __init__(self, capacity: int, obs_dim: int, action_dim: int):
        require_memory(capacity * (2 * obs_dim + action_dim + 2) * 4, f"a transition buffer of {capacity:,} "
                       "transitions", "lower buffer_size (--set buffer_size=N)")
        self.obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.actions = np.zeros((capacity, action_dim), dtype=np.float32)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.terminated = np.zeros(capacity, dtype=np.float32)
        self.size = 0
        self.pos = 0

    def add(self, obs, actions, rewards, next_obs, terminated) -> None:
        for i in range(len(obs)):  # vector envs add a handful of rows per step
            p = self.pos
            self.obs[p], self.actions[p], self.rewards[p] = obs[i], actions[i], rewards[i]
            self.next_obs[p], self.terminated[p] = next_obs[i], terminated[i]
            self.pos = (p + 1) % len(self.obs)
            self.size = min(self.size + 1, len(self.obs))

    def tensors(self, rows: np.ndarray) -> tuple[torch.Tensor, ...]:
        return tuple(torch.from_numpy(a[rows]) for a in (self.obs, self.actions, self.next_obs, self.rewards,
                                                          self.terminated))

    def state_dict(self) -> dict[str, Any]:
        n = self.size
        return {"obs": self.obs[:n].copy(), "actions": self.actions[:n].copy(), "rewards": self.rewards[:n].copy(),
                "next_obs": self.next_obs[:n].copy(), "terminated": self.terminated[:n].copy(),
                "size": n, "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        n = int(state["size"])
        for key in ("obs", "actions", "rewards", "next_obs", "terminated"):
            getattr(self, key)[:n] = np.asarray(state[key])
        self.size, self.pos = n, int(state["pos"])


class MPCPlanner:
    """Learns a dynamics ensemble from transitions and acts by CEM-MPC over it (see the module docstring)."""

    def __init__(self, config: Any, obs_space: gym.spaces.Box, action_space: gym.Space, *, n_envs: int, seed: int,
                 total_steps: int = 0):
        c = self.config = config
        # the exploration bonus of training plans: constant, or falling to 0 over explore_decay of the run
        decay_steps = int(c.explore_decay * total_steps)
        self.bonus = LinearSchedule(c.explore_bonus, 0.0 if decay_steps else c.explore_bonus, decay_steps)
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        self.obs_dim = int(np.prod(obs_space.shape))
        if self.discrete:
            self.n_actions = int(action_space.n)
            self.action_start = int(action_space.start)
            self.action_dim = self.n_actions
        else:
            self.low = action_space.low.astype(np.float64)
            self.high = action_space.high.astype(np.float64)
            self.action_dim = int(np.prod(action_space.shape))
            self.action_shape = action_space.shape
        self.generator = torch.Generator().manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.model = DynamicsEnsemble(self.obs_dim, self.action_dim, members=c.ensemble, hidden=c.model_hidden,
                                      lr=c.model_lr, weight_decay=c.weight_decay, generator=self.generator)
        self.value = ValueNet(self.obs_dim, c.value_hidden, c.value_lr, self.generator) if c.value_steps else None
        self.buffer = TransitionBuffer(c.buffer_size, self.obs_dim, self.action_dim)
        self.discounts = c.gamma ** torch.arange(c.horizon, dtype=torch.float32)
        self.n_envs = n_envs
        self.plans: dict[int, Any] = {}  # batch size (negative: evaluation) → warm start of the next plan
        self.plan_age: dict[int, int] = {}  # steps since that plan's search (plan_every > 1 follows it between)
        self.rollout = None  # the model's fast planning form, rebuilt after each training round
        self.steps = 0
        self.trained_rounds = 0
        self.next_train = max(c.learning_starts, c.train_every)
        # Planned vs realised H-step returns of training steps: one open record per env and step age.
        self._open_planned = np.zeros((n_envs, c.horizon))
        self._open_realised = np.zeros((n_envs, c.horizon))
        self._open_age = np.full((n_envs, c.horizon), -1, dtype=np.int64)  # -1 = slot free
        self._slot = 0
        self._metric_sums: dict[str, float] = {}
        self._metric_counts: dict[str, int] = {}
        self._last_planned = np.zeros(n_envs)
        self.plan_time = {"train": 0.0, "eval": 0.0}
        self.plan_steps = {"train": 0, "eval": 0}

    # ------------------------------------------------------------ planning

    def _features(self, seqs: torch.Tensor) -> torch.Tensor:
        """Model inputs of action sequences: one-hot for discrete actions, [-1, 1] values as they are."""
        if self.discrete:
            return torch.nn.functional.one_hot(seqs, self.n_actions).float()
        return seqs

    def score(self, obs: torch.Tensor, seqs: torch.Tensor, explore: bool = False) -> torch.Tensor:
        """Predicted discounted return (B, N) of action sequences (B, N, H[, D]) from states (B, d): the mean
        over the ensemble members, each propagating its own trajectory, minus `risk` times their std; while
        training (`explore`) with an `explore_bonus`, plus the bonus for the members' disagreement along the way
        instead of the pessimism (optimism while exploring, pessimism in greedy plans)."""
        b, n, h = seqs.shape[:3]
        part = self._rollout().action_part(self._features(seqs.reshape(b * n, h, *seqs.shape[3:]).transpose(0, 1)))
        states = obs[:, None, :].expand(b, n, self.obs_dim).reshape(b * n, self.obs_dim)
        optimism = self.bonus(self.steps) if explore else 0.0
        returns = self.rollout.returns(states, part, self.discounts, self.value if self.trained_rounds else None,
                                       self.config.gamma ** h, optimism)
        score = returns.mean(dim=0)
        # pessimism where the members disagree (off the data), except in plans that seek disagreement
        if self.config.risk and returns.shape[0] > 1 and not optimism:
            score = score - self.config.risk * returns.std(dim=0)
        return score.reshape(b, n)

    def _rollout(self):
        """The model's fast planning form, rebuilt after each training round (on the first use after it)."""
        if self.rollout is None:
            self.rollout = self.model.rollout_net()
        return self.rollout

    @torch.inference_mode()
    def plan(self, obs: np.ndarray, explore: bool) -> np.ndarray:
        """Env actions for a batch of observations, by CEM from each env's warm-started plan; with `plan_every`
        > 1, the steps between searches take the last plan's next action instead (the plan shifted by one)."""
        c = self.config
        t0 = time.perf_counter()
        b = len(obs)
        x = torch.as_tensor(obs.reshape(b, -1), dtype=torch.float32)
        key = b if explore else -b  # training and evaluation envs keep separate warm starts
        previous = self.plans.get(key)
        if previous is not None and self.plan_age.get(key, 0) + 1 < c.plan_every:
            self.plan_age[key] += 1
            self.plans[key] = self._shifted(previous)
        else:
            self.plan_age[key] = 0
            self.plans[key] = self._search(x, previous, explore)
        chosen = self.plans[key][1] if self.discrete else self.plans[key]
        env_actions = self._env_actions(chosen[:, 0].numpy(), explore)
        mode = "train" if explore else "eval"
        self.plan_time[mode] += time.perf_counter() - t0
        self.plan_steps[mode] += b
        if explore:  # sampled: the check costs one more rollout
            self._last_planned = (self.predicted_rewards(x, chosen).numpy().astype(np.float64)
                                  if self.steps % PLAN_CHECK_EVERY == 0 else np.full(b, np.nan))
        return env_actions

    def _search(self, x: torch.Tensor, previous: Any, explore: bool) -> Any:
        """One CEM search from the warm start `previous`: (probabilities, best sequence) for discrete actions,
        the Gaussian's mean for continuous ones."""
        c = self.config
        b = len(x)

        def scorer(seqs: torch.Tensor) -> torch.Tensor:
            return self.score(x, seqs, explore)

        kwargs = dict(candidates=c.candidates, elites=c.elites, iterations=c.cem_iterations,
                      momentum=c.cem_momentum, generator=self.generator)
        if self.discrete:
            prior = torch.full((b, c.horizon, self.n_actions), 1.0 / self.n_actions)
            keep = None
            if previous is not None:  # shift by one step; the new last step starts uniform
                prior[:, :-1] = previous[0][:, 1:]
                prior = 0.5 * prior + 0.5 / self.n_actions  # keep some doubt, so a stale plan can be dropped
                keep = torch.cat([previous[1][:, 1:], previous[1][:, -1:]], dim=1)
            probs, best_seq, _ = cem_categorical(scorer, prior, keep=keep, **kwargs)
            return probs, best_seq
        mean = torch.zeros(b, c.horizon, self.action_dim)
        if previous is not None:
            mean[:, :-1] = previous[:, 1:]
        std = torch.full_like(mean, c.init_std)
        mean, _, _ = cem_gaussian(scorer, mean, std, **kwargs)
        return mean

    def _shifted(self, plan: Any) -> Any:
        """A plan one step on, as a warm start shifts it (the new last step: uniform, or the mean 0)."""
        if self.discrete:
            probs, best_seq = plan
            shifted = torch.full_like(probs, 1.0 / self.n_actions)
            shifted[:, :-1] = probs[:, 1:]
            return shifted, torch.cat([best_seq[:, 1:], best_seq[:, -1:]], dim=1)
        mean = torch.zeros_like(plan)
        mean[:, :-1] = plan[:, 1:]
        return mean

    def _env_actions(self, first: np.ndarray, explore: bool) -> np.ndarray:
        """Env actions from the plans' first steps, with the training exploration (epsilon, action noise)."""
        c = self.config
        b = len(first)
        if self.discrete:
            actions = first
            if explore and c.epsilon > 0:
                random = self.rng.random(b) < c.epsilon
                actions = np.where(random, self.rng.integers(self.n_actions, size=b), actions)
            return actions.astype(np.int64) + self.action_start
        action = first.astype(np.float64)
        if explore and c.action_noise > 0:
            action = np.clip(action + c.action_noise * self.rng.standard_normal(action.shape), -1.0, 1.0)
        env_actions = (self.low + (action + 1.0) * 0.5 * (self.high - self.low)).reshape(b, *self.action_shape)
        return env_actions.astype(np.float32)

    def predicted_rewards(self, obs: torch.Tensor, seqs: torch.Tensor) -> torch.Tensor:
        """The model's H-step discounted reward sum (B,) of one sequence per state, members' mean, without
        the value beyond the horizon: what the realised H-step return is compared with."""
        part = self._rollout().action_part(self._features(seqs).transpose(0, 1))
        return self.rollout.returns(obs, part, self.discounts).mean(dim=0)

    def random_actions(self, b: int) -> np.ndarray:
        if self.discrete:
            return self.rng.integers(self.n_actions, size=b).astype(np.int64) + self.action_start
        u = self.rng.random((b, self.action_dim))
        return (self.low + u * (self.high - self.low)).reshape(b, *self.action_shape).astype(np.float32)

    def act(self, obs: np.ndarray, explore: bool) -> np.ndarray:
        if explore and self.steps < self.config.learning_starts:
            self._last_planned = np.full(len(obs), np.nan)
            return self.random_actions(len(obs))
        return self.plan(obs, explore)

    # ------------------------------------------------------------ learning

    def action_features(self, actions: np.ndarray) -> np.ndarray:
        if self.discrete:
            return np.eye(self.n_actions, dtype=np.float32)[np.asarray(actions).reshape(-1) - self.action_start]
        a = np.asarray(actions, dtype=np.float64).reshape(len(actions), -1)
        return (2.0 * (a - self.low) / (self.high - self.low) - 1.0).astype(np.float32)

    def observe(self, obs, actions, rewards, next_obs, terminated, truncated,
                skip: np.ndarray | None = None) -> None:
        """Record a vector step (rows where `skip` is true are not learned from) and train when due."""
        b = len(obs)
        keep = slice(None) if skip is None or not skip.any() else ~skip
        self.buffer.add(obs.reshape(b, -1)[keep], self.action_features(actions)[keep], np.asarray(rewards)[keep],
                        next_obs.reshape(b, -1)[keep], np.asarray(terminated)[keep])
        self._track_returns(rewards, terminated | truncated)
        self.steps += b
        if self.steps >= self.next_train:
            self.next_train += self.config.train_every * ((self.steps - self.next_train) // self.config.train_every + 1)
            self.train()
        if (terminated | truncated).any():
            if b in self.plans:  # a new episode starts from a fresh plan (all envs: rare, and cheap)
                del self.plans[b]

    def _split(self) -> tuple[np.ndarray, np.ndarray]:
        rows = np.arange(self.buffer.size)
        held = rows % self.config.holdout_every == self.config.holdout_every - 1
        return rows[~held], rows[held]

    def train(self) -> None:
        """Refit the normalisers, take `train_steps` gradient steps, then log the held-out losses."""
        c = self.config
        train_rows, held_rows = self._split()
        if len(train_rows) < 2:
            return
        obs, feats, next_obs, rewards, terminated = self.buffer.tensors(train_rows)
        self.model.fit_normalisers(obs, feats, next_obs, rewards)
        steps = c.train_steps if self.trained_rounds else c.train_steps * c.first_train_factor
        losses = self.model.train_steps((obs, feats, next_obs, rewards, terminated), steps, c.model_batch)
        self.trained_rounds += 1
        self.rollout = None
        if self.value is not None:
            norm = self.model.in_norm
            d = self.obs_dim
            scaled = [(x - norm.mean[:d]) / norm.std[:d] for x in (obs, next_obs)]
            backups = self._model_backups(scaled[0], feats) if c.value_target == "greedy" else None
            td = self.value.fit(scaled[0], rewards, scaled[1], terminated, c.gamma,
                                float(self.model.reward_norm.mean[0]), float(self.model.reward_norm.std[0]),
                                c.value_steps, c.model_batch, c.value_target_every, backups)
            self._add_metric("losses/value_td_loss", td)
        for head, value in losses.items():
            self._add_metric(f"model/train_loss_{head}", value)
        if len(held_rows):
            held = self.buffer.tensors(held_rows)
            with torch.no_grad():
                heads = self.model.losses(*held)
                e = self.model.members
                pred, _, _ = self.model.predict(held[0].expand(e, *held[0].shape), held[1].expand(e, *held[1].shape))
                spread = ((pred - held[0]) / self.model.delta_norm.std).std(dim=0).mean()
            for head, value in heads.items():
                self._add_metric(f"model/heldout_loss_{head}", float(value))
            self._add_metric("model/ensemble_disagreement", float(spread))

    def _model_backups(self, states: torch.Tensor, features: torch.Tensor) -> Backups:
        """The value net's `backups` for `value_target: greedy`: for rows of (normalised) `states`, the freshly
        trained model's one-step predictions of the other actions — every other discrete action, or
        `GREEDY_SAMPLES` uniform continuous ones."""
        net = self._rollout()
        if self.discrete:
            alternatives = torch.eye(self.n_actions)[:, None, :]  # (K, 1, A)

        def backups(rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
            with torch.no_grad():
                if self.discrete:
                    feats = alternatives.expand(self.n_actions, len(rows), self.n_actions)
                    valid = (feats != features[rows][None]).any(dim=-1)  # the taken action has its real target
                else:
                    feats = torch.rand(GREEDY_SAMPLES, len(rows), self.action_dim, generator=self.generator) * 2 - 1
                    valid = torch.ones(GREEDY_SAMPLES, len(rows), dtype=torch.bool)
                return (*net.one_step_backups(states[rows], feats), valid)

        return backups

    # ------------------------------------------------------------ logging

    def _track_returns(self, rewards: np.ndarray, done: np.ndarray) -> None:
        """Close H-step windows of realised return against the return planned at their start."""
        h, gamma = self.config.horizon, self.config.gamma
        live = self._open_age >= 0
        self._open_realised += np.where(live, gamma ** np.maximum(self._open_age, 0) * rewards[:, None], 0.0)
        self._open_age[live] += 1
        closing = live & ((self._open_age >= h) | done[:, None])
        if closing.any():
            self._add_metric("planning/planned_return", float(self._open_planned[closing].mean()),
                             int(closing.sum()))
            self._add_metric("planning/realised_return", float(self._open_realised[closing].mean()),
                             int(closing.sum()))
            self._open_age[closing] = -1
        # open a window for the step just taken, counting its reward
        planned = self._last_planned
        if np.isfinite(planned).all() and len(planned) == len(rewards):
            slot = self._slot
            self._open_planned[:, slot] = planned
            self._open_realised[:, slot] = rewards
            self._open_age[:, slot] = np.where(done, -1, 1)
            self._slot = (slot + 1) % h

    def _add_metric(self, key: str, value: float, count: int = 1) -> None:
        self._metric_sums[key] = self._metric_sums.get(key, 0.0) + value * count
        self._metric_counts[key] = self._metric_counts.get(key, 0) + count

    def metrics(self) -> dict[str, float]:
        out = {k: self._metric_sums[k] / self._metric_counts[k] for k in self._metric_sums}
        self._metric_sums.clear()
        self._metric_counts.clear()
        if self.config.explore_bonus:
            out["charts/explore_bonus"] = self.bonus(self.steps)
        if self.plan_steps["train"]:
            out["timing/plan_ms_per_step"] = 1000.0 * self.plan_time["train"] / self.plan_steps["train"]
        return out

    def plan_ms(self) -> dict[str, float | None]:
        return {f"plan_ms_per_step{'' if mode == 'train' else '_eval'}":
                (round(1000.0 * self.plan_time[mode] / self.plan_steps[mode], 3) if self.plan_steps[mode] else None)
                for mode in ("train", "eval")}

    # ------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "buffer": self.buffer.state_dict(),
                **({"value": self.value.state_dict_all()} if self.value is not None else {}),
                "counters": {"steps": self.steps, "trained_rounds": self.trained_rounds,
                             "next_train": self.next_train},
                "rng": self.rng.bit_generator.state, "generator": self.generator.get_state(),
                # warm starts and open planned-vs-realised records, so a resumed run plans exactly as before
                "plans": [[key, list(plan) if isinstance(plan, tuple) else [plan]] for key, plan in self.plans.items()],
                "plan_age": [[key, age] for key, age in self.plan_age.items()],
                "open": {"planned": self._open_planned.copy(), "realised": self._open_realised.copy(),
                         "age": self._open_age.copy(), "slot": self._slot, "last_planned": self._last_planned.copy()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        if self.value is not None:
            self.value.load_state_dict_all(state["value"])
        self.buffer.load_state_dict(state["buffer"])
        counters = state["counters"]
        self.steps, self.trained_rounds = int(counters["steps"]), int(counters["trained_rounds"])
        self.next_train = int(counters["next_train"])
        self.rng.bit_generator.state = state["rng"]
        self.generator.set_state(torch.as_tensor(state["generator"], dtype=torch.uint8))
        self.plans = {int(key): (tuple(plan) if len(plan) == 2 else plan[0]) for key, plan in state.get("plans", [])}
        self.plan_age = {int(key): int(age) for key, age in state.get("plan_age", [])}
        if "open" in state and np.shape(state["open"]["age"]) == self._open_age.shape:
            opened = state["open"]
            self._open_planned, self._open_realised = np.array(opened["planned"]), np.array(opened["realised"])
            self._open_age, self._slot = np.array(opened["age"]), int(opened["slot"])
            self._last_planned = np.array(opened["last_planned"])
        self.rollout = None

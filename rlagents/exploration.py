"""Exploration strategies for value-based agents: epsilon-greedy, Boltzmann (softmax) and a UCB count bonus.

Each strategy picks one action from one state's action values (a short Python list) and its visit counts.
Tabular agents call them once per env step, so they work on plain Python floats and a `random.Random`:
for four actions that is several times faster than NumPy, whose per-call overhead dominates tiny arrays.
`epsilon_greedy_batch` is the batched NumPy form, for agents that score a whole batch at once (DQN).
Each strategy also gives the expected next-state value under its own policy (expected SARSA's target) and
reports what it does as TensorBoard scalars (`charts/epsilon`, `charts/temperature`,
`charts/explore_fraction`: the share of actions that were not greedy since the previous report).
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

from rlagents.masks import random_legal
from rlagents.obs import batch_len

from rlagents.schedules import ExponentialSchedule, LinearSchedule

Decay = Literal["linear", "exponential"]


def decay_schedule(start: float, end: float, duration: int, kind: Decay) -> LinearSchedule | ExponentialSchedule:
    """`start` → `end` over `duration` steps: linearly, or exponentially with 1% of the gap left at `duration`."""
    if kind == "linear":
        return LinearSchedule(start, end, duration)
    return ExponentialSchedule(start, end, 0.01 ** (1.0 / duration) if duration > 0 else 0.0)


def argmax(values: Sequence[float]) -> int:
    """Index of the first largest value (ties are broken by the agent's initial noise, not here)."""
    return values.index(max(values))


def legal_argmax(values: Sequence[float], legal: list[int] | None) -> int:
    """`argmax` over the actions in `legal` only (all actions when `legal` is None)."""
    if legal is None:
        return argmax(values)
    return max(legal, key=values.__getitem__)  # the first of equal maxima, as argmax


class Exploration(ABC):
    """Chooses actions from action values; counts how many of its choices were exploratory."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.chosen = 0
        self.explored = 0

    @abstractmethod
    def choose(self, q: list[float], counts: list[int], step: int) -> int:
        """An action for a state with action values `q` and visit counts `counts`, at training step `step`."""

    @abstractmethod
    def expected(self, q: list[float], counts: list[int], step: int) -> float:
        """Expected action value of the state under this strategy's policy (the expected-SARSA target)."""

    def choose_legal(self, q: list[float], counts: list[int], step: int, legal: list[int] | None) -> int:
        """`choose` among the actions in `legal` only (an action mask's legal actions; None: all)."""
        if legal is None or len(legal) == len(q):
            return self.choose(q, counts, step)
        return legal[self.choose([q[a] for a in legal], [counts[a] for a in legal], step)]

    def expected_legal(self, q: list[float], counts: list[int], step: int, legal: list[int] | None) -> float:
        """`expected` under the policy restricted to the actions in `legal` (None: all)."""
        if legal is None or len(legal) == len(q):
            return self.expected(q, counts, step)
        return self.expected([q[a] for a in legal], [counts[a] for a in legal], step)

    def schedule_metrics(self, step: int) -> dict[str, float]:
        """The strategy's own schedule values at `step`."""
        return {}

    def metrics(self, step: int) -> dict[str, float]:
        """Schedule values and the exploratory share of actions since the previous call."""
        out = self.schedule_metrics(step)
        if self.chosen:
            out["charts/explore_fraction"] = self.explored / self.chosen
        self.chosen = self.explored = 0
        return out


class EpsilonGreedy(Exploration):
    """A uniformly random action with probability epsilon, else the greedy one; epsilon decays over training."""

    def __init__(self, rng: random.Random, start: float, end: float, duration: int, decay: Decay = "linear"):
        super().__init__(rng)
        self.epsilon = decay_schedule(start, end, duration, decay)

    def choose(self, q: list[float], counts: list[int], step: int) -> int:
        self.chosen += 1
        greedy = argmax(q)
        if self.rng.random() < self.epsilon(step):
            action = int(self.rng.random() * len(q))
            self.explored += action != greedy
            return action
        return greedy

    def expected(self, q: list[float], counts: list[int], step: int) -> float:
        eps = self.epsilon(step)
        return (1.0 - eps) * max(q) + eps * sum(q) / len(q)

    def schedule_metrics(self, step: int) -> dict[str, float]:
        return {"charts/epsilon": self.epsilon(step)}


def epsilon_greedy_batch(greedy: Callable[[np.ndarray], np.ndarray], obs: np.ndarray, epsilon: float,
                         n_actions: int, rng: np.random.Generator, masks: np.ndarray | None = None) -> np.ndarray:
    """Epsilon-greedy actions for a batch, for agents whose greedy actions come from a network (DQN).

    One uniform draw per row decides exploration; `greedy` is not called at all when every row explores.
    With action `masks`, random actions are drawn among each row's legal ones (`greedy` must respect them).
    """
    n = batch_len(obs)
    random_mask = rng.random(n) < epsilon
    if random_mask.all():
        return rng.integers(0, n_actions, size=n) if masks is None else random_legal(masks, rng)
    actions = greedy(obs)
    if random_mask.any():
        if masks is None:
            actions[random_mask] = rng.integers(0, n_actions, size=int(random_mask.sum()))
        else:
            actions[random_mask] = random_legal(masks[random_mask], rng)
    return actions


def softmax(q: Sequence[float], temperature: float) -> list[float]:
    """Boltzmann probabilities exp(q/T) / Σ exp(q/T), shifted by the max so large values cannot overflow."""
    top = max(q)
    weights = [math.exp((v - top) / temperature) for v in q]
    total = sum(weights)
    return [w / total for w in weights]


class Boltzmann(Exploration):
    """Samples actions with probability ∝ exp(Q / T); the temperature T decays over training."""

    MIN_TEMPERATURE = 1e-6  # below this the softmax is the greedy policy to double precision anyway

    def __init__(self, rng: random.Random, start: float, end: float, duration: int, decay: Decay = "exponential"):
        super().__init__(rng)
        self.temperature = decay_schedule(start, end, duration, decay)

    def choose(self, q: list[float], counts: list[int], step: int) -> int:
        self.chosen += 1
        probs = softmax(q, max(self.temperature(step), self.MIN_TEMPERATURE))
        u = self.rng.random()
        action = len(probs) - 1
        cumulative = 0.0
        for a, p in enumerate(probs):
            cumulative += p
            if u < cumulative:
                action = a
                break
        self.explored += action != argmax(q)
        return action

    def expected(self, q: list[float], counts: list[int], step: int) -> float:
        probs = softmax(q, max(self.temperature(step), self.MIN_TEMPERATURE))
        return sum(p * v for p, v in zip(probs, q))

    def schedule_metrics(self, step: int) -> dict[str, float]:
        return {"charts/temperature": self.temperature(step)}


class UCB(Exploration):
    """Greedy on Q(s,a) + c·sqrt(ln N(s) / N(s,a)) (UCB1 per state); untried actions come first."""

    def __init__(self, rng: random.Random, c: float):
        super().__init__(rng)
        self.c = c

    def _best(self, q: list[float], counts: list[int]) -> int:
        if 0 in counts:
            return counts.index(0)
        log_total = math.log(sum(counts))
        scores = [v + self.c * math.sqrt(log_total / n) for v, n in zip(q, counts)]
        return argmax(scores)

    def choose(self, q: list[float], counts: list[int], step: int) -> int:
        self.chosen += 1
        action = self._best(q, counts)
        self.explored += action != argmax(q)
        return action

    def expected(self, q: list[float], counts: list[int], step: int) -> float:
        return q[self._best(q, counts)]  # the UCB policy is deterministic given the counts


def make_exploration(kind: str, rng: random.Random, *, total_steps: int, epsilon_start: float,
                     epsilon_end: float, epsilon_fraction: float, epsilon_decay: Decay,
                     temperature_start: float, temperature_end: float, temperature_fraction: float,
                     temperature_decay: Decay, ucb_c: float) -> Exploration:
    """The strategy named `kind` (`epsilon`, `boltzmann` or `ucb`) with its schedule over `total_steps`."""
    if kind == "epsilon":
        return EpsilonGreedy(rng, epsilon_start, epsilon_end, int(epsilon_fraction * total_steps), epsilon_decay)
    if kind == "boltzmann":
        return Boltzmann(rng, temperature_start, temperature_end, int(temperature_fraction * total_steps),
                         temperature_decay)
    if kind == "ucb":
        return UCB(rng, ucb_c)
    raise ValueError(f"unknown exploration {kind!r}")

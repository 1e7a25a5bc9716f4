"""What an agent without memory can score on DigitRecall-v0: the best memoryless policies, found exactly, and a
uniformly random policy, measured.

A memoryless policy maps the current observation to an action. On DigitRecall the first observation shows the
digit (assume it is read perfectly: an upper bound) and the dial; every later one shows only the dial. So a
deterministic memoryless policy is a first action for each (digit, dial) and an action for each dial position
on a blank image; this script tries all 3^10 blank-image policies, picks the best first action for each,
and reports the best expected return and the best success rate (they are reached by different policies).
The digit and dial are drawn as the env draws them (the test split's labels, a uniform dial).

    python benchmarks/digit_recall_memoryless.py            # exact optimum + 10,000 random-policy episodes
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np

import envs  # noqa: F401  (registers DigitRecall-v0)
from envs.digit_lock import N_POSITIONS, OPEN, TURN_COST, TURN_DOWN, TURN_UP
from rlagents.digits import sklearn_test_digits
from rlagents.environments import evaluate, make_vec_env

LIMIT = 30  # DigitRecall-v0's max_episode_steps


def blank_outcome(policy: tuple[int, ...], dial: int, steps_left: int) -> tuple[int | None, int]:
    """Where a blank-image policy opens from `dial` (None: it never does in time) and how many turns it takes."""
    turns = 0
    while steps_left > 0:
        action = policy[dial]
        if action == OPEN:
            return dial, turns
        dial = (dial + (1 if action == TURN_UP else -1)) % N_POSITIONS
        turns += 1
        steps_left -= 1
    return None, turns


def best_memoryless(digit_probs: np.ndarray) -> dict[str, float]:
    """Exact best expected return and best success rate over deterministic memoryless policies."""
    best_return, best_success = -np.inf, 0.0
    for policy in itertools.product((TURN_DOWN, TURN_UP, OPEN), repeat=N_POSITIONS):
        # values[k, d, p0]: return and success of first action k at dial p0 when the digit is d
        returns = np.empty((3, N_POSITIONS, N_POSITIONS))
        success = np.zeros((3, N_POSITIONS, N_POSITIONS))
        digits = np.arange(N_POSITIONS)
        for p0 in range(N_POSITIONS):
            returns[OPEN, :, p0] = np.where(digits == p0, 1.0, -1.0)
            success[OPEN, p0, p0] = 1.0
            for action, step in ((TURN_UP, 1), (TURN_DOWN, -1)):
                where, turns = blank_outcome(policy, (p0 + step) % N_POSITIONS, LIMIT - 1)
                cost = TURN_COST * (1 + turns)
                if where is None:
                    returns[action, :, p0] = -cost
                else:
                    returns[action, :, p0] = np.where(digits == where, 1.0, -1.0) - cost
                    success[action, where, p0] = 1.0
        weights = digit_probs[:, None] / N_POSITIONS  # P(digit d, dial p0)
        best_return = max(best_return, float((returns.max(axis=0) * weights).sum()))
        best_success = max(best_success, float((success.max(axis=0) * weights).sum()))
    return {"best_return": best_return, "best_success": best_success}


def random_policy(episodes: int, seed: int) -> dict[str, float]:
    """Mean return and success rate of uniformly random actions (success: a positive return, see the docs)."""
    vec = make_vec_env("DigitRecall-v0", 50)
    rng = np.random.default_rng(seed)
    returns, _ = evaluate(lambda obs: rng.integers(3, size=50), vec, episodes, seed)
    vec.close()
    return {"return": float(returns.mean()), "success": float((returns > 0).mean()), "episodes": episodes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    _, labels = sklearn_test_digits(0)
    digit_probs = np.bincount(labels, minlength=N_POSITIONS) / len(labels)
    print("best deterministic memoryless policy (perfect reader):", best_memoryless(digit_probs))
    print("uniformly random policy:", random_policy(args.episodes, args.seed))


if __name__ == "__main__":
    main()

"""The optimal Blackjack-v1 policy under Gymnasium's default rules, and how close learned policies come to it.

Gymnasium's Blackjack-v1 (natural=False, sab=False) deals from an infinite deck (1-9 with probability 1/13
each, 10 with 4/13), the dealer draws to 17 and stands on a soft 17, a natural pays like any win. The
observation (player sum, dealer's card, usable ace) is Markov, so the optimal policy follows from dynamic
programming over the exact model; its expected return is computed exactly (a sum over the initial deals) and
measured by playing hands in the env. A run's greedy policy (`qlearning` or `planner` on Blackjack-v1) is
valued the same two ways, on the same hands, so the difference has no sampling noise where the policies agree.

Usage: python benchmarks/blackjack_optimum.py [RUN_DIR ...] [--hands 100000] [--seed 12345]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

CARDS = np.arange(1, 11)
P_CARD = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 4]) / 13.0
SUMS, DEALER, ACE = 32, 11, 2  # the observation space: Tuple(Discrete(32), Discrete(11), Discrete(2))
STICK, HIT = 0, 1
# States a player acts in: sums 4-21 without a usable ace, 12-21 with one; dealer cards 1-10.
REACHABLE = np.zeros((SUMS, DEALER, ACE), dtype=bool)
REACHABLE[4:22, 1:11, 0] = True
REACHABLE[12:22, 1:11, 1] = True


def add_card(total: int, usable: int, card: int) -> tuple[int, int]:
    """(sum, usable ace) after drawing `card` onto a hand showing `total` with `usable` ace; sum > 21 = bust."""
    hard = total - 10 * usable + card
    has_ace = bool(usable) or card == 1  # a hand without a usable ace whose ace could count 11 has no ace
    if has_ace and hard + 10 <= 21:
        return hard + 10, 1
    return hard, 0


def dealer_outcomes() -> np.ndarray:
    """P(dealer's final score) for each face-up card: (11, 23), score 22 = bust (scores 17-21 otherwise)."""
    memo: dict[tuple[int, int], np.ndarray] = {}

    def final(total: int, usable: int) -> np.ndarray:
        if total > 21:
            out = np.zeros(23)
            out[22] = 1.0
            return out
        if total >= 17:
            out = np.zeros(23)
            out[total] = 1.0
            return out
        key = (total, usable)
        if key not in memo:
            memo[key] = sum(p * final(*add_card(total, usable, int(c))) for c, p in zip(CARDS, P_CARD))
        return memo[key]

    table = np.zeros((DEALER, 23))
    for up in CARDS:
        start = (11, 1) if up == 1 else (int(up), 0)
        table[up] = sum(p * final(*add_card(*start, int(c))) for c, p in zip(CARDS, P_CARD))
    return table


def stick_values() -> np.ndarray:
    """Expected reward of sticking, (SUMS, DEALER): +1 win, 0 draw, -1 loss against the dealer's outcomes."""
    dealer = dealer_outcomes()
    out = np.zeros((SUMS, DEALER))
    for total in range(4, 22):
        for up in CARDS:
            p = dealer[up]
            out[total, up] = p[22] + p[:total].sum() - p[total + 1:22].sum()
    return out


def action_values(v: np.ndarray, stick: np.ndarray) -> np.ndarray:
    """Q(s, ·) of every live state (sum 4-21) given state values `v` (SUMS, DEALER, ACE): (SUMS, DEALER, ACE, 2)."""
    q = np.zeros((SUMS, DEALER, ACE, 2))
    for total in range(4, 22):
        for usable in (0, 1):
            q[total, :, usable, STICK] = stick[total]
            hit = np.zeros(DEALER)
            for c, p in zip(CARDS, P_CARD):
                nxt, nxt_usable = add_card(total, usable, int(c))
                hit += p * (-1.0 if nxt > 21 else v[nxt, :, nxt_usable])
            q[total, :, usable, HIT] = hit
    return q


def optimal_policy() -> tuple[np.ndarray, np.ndarray]:
    """(policy (SUMS, DEALER, ACE) of actions, its state values) by value iteration (exact after ~10 sweeps:
    every hit raises the hard total)."""
    stick = stick_values()
    v = np.zeros((SUMS, DEALER, ACE))
    for _ in range(30):
        v = action_values(v, stick).max(axis=3)
    q = action_values(v, stick)
    return q.argmax(axis=3), q.max(axis=3)


def policy_values(policy: np.ndarray) -> np.ndarray:
    """State values (SUMS, DEALER, ACE) of a deterministic policy, by iterating its Bellman equation."""
    stick = stick_values()
    v = np.zeros((SUMS, DEALER, ACE))
    chosen = policy[..., None]
    for _ in range(30):
        v = np.take_along_axis(action_values(v, stick), chosen, axis=3)[..., 0]
    return v


def expected_return(v: np.ndarray) -> float:
    """Exact expected return per hand: state values averaged over the initial deals."""
    total = 0.0
    for c1, p1 in zip(CARDS, P_CARD):
        for c2, p2 in zip(CARDS, P_CARD):
            s, usable = add_card(*((11, 1) if c1 == 1 else (int(c1), 0)), int(c2))
            for up, pu in zip(CARDS, P_CARD):
                total += p1 * p2 * pu * v[s, up, usable]
    return float(total)


def play(policy: np.ndarray, hands: int, seed: int) -> np.ndarray:
    """Returns of `hands` hands of Blackjack-v1 played with `policy`, through rlagents' evaluation."""
    from rlagents.environments import evaluate, make_vec_env

    envs = make_vec_env("Blackjack-v1", 50)
    try:
        returns, _ = evaluate(lambda obs: policy[obs[0], obs[1], obs[2]], envs, hands, seed)
    finally:
        envs.close()
    return returns


def run_policy(run_dir: Path) -> np.ndarray:
    """The greedy policy of a finished Blackjack-v1 run, asked of the agent for every observation."""
    import torch

    from rlagents.evaluate import spaces_of
    from rlagents.runs import load_run

    agent = load_run(run_dir, spaces_of, device=torch.device("cpu")).agent
    s, d, a = np.meshgrid(np.arange(SUMS), np.arange(DEALER), np.arange(ACE), indexing="ij")
    actions = agent.act((s.ravel(), d.ravel(), a.ravel()), explore=False)
    return np.asarray(actions).reshape(SUMS, DEALER, ACE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="*", type=Path, help="run directories of agents trained on Blackjack-v1")
    parser.add_argument("--hands", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=12_345, help="seed of the hands (the same for every policy)")
    args = parser.parse_args()
    best, values = optimal_policy()
    optimum = play(best, args.hands, args.seed)
    se = optimum.std(ddof=1) / np.sqrt(len(optimum))
    print(f"optimal policy: exact {expected_return(values):+.4f} per hand; over {len(optimum):,} hands "
          f"(seed {args.seed}): {optimum.mean():+.4f} ± {se:.4f} (standard error)")
    for run_dir in args.runs:
        policy = run_policy(run_dir)
        returns = play(policy, args.hands, args.seed)
        diff = returns - optimum
        disagree = int((policy[REACHABLE] != best[REACHABLE]).sum())
        print(f"{run_dir}: exact {expected_return(policy_values(policy)):+.4f}; same hands {returns.mean():+.4f} "
              f"(minus optimum {diff.mean():+.4f} ± {diff.std(ddof=1) / np.sqrt(len(diff)):.4f}); differs from "
              f"the optimal policy in {disagree} of {REACHABLE.sum()} reachable states")


if __name__ == "__main__":
    main()

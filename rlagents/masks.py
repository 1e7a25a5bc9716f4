"""Action masks: which discrete actions are legal in each state, as the env says.

An env gives masks in one of two ways, both common (PettingZoo, Gymnasium's Taxi, RLlib, Tianshou):
`info["action_mask"]` from `reset` and `step`, or an `action_mask` key of a `Dict` observation. Either way a
mask is one entry per action of a `Discrete(n)` space (index `a - start`), nonzero where the action is legal.
Inside rlagents a batch of masks is a bool array (batch, n). `SyncVecEnv` keeps the masks of its current
observations (`SyncVecEnv.action_masks()`) and the masks of final observations (`infos["final_action_mask"]`),
so the loop and evaluation read them in one place, and agents receive them as arguments
(`act(obs, explore=..., mask=...)`, `observe(..., mask=..., next_mask=...)`).

A state in which the env marks no action legal (a terminal state, often) is treated as if every action were
legal: that keeps targets and probabilities finite, and such states are never acted in.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from rlagents.errors import UserError

MASK_KEY = "action_mask"
FINAL_MASK_KEY = "final_action_mask"
# masked logits of policy-gradient agents: exp(-1e8 - max) is exactly 0 in float32, and unlike -inf it keeps
# entropies and log-probabilities of legal actions finite
MASKED_LOGIT = -1.0e8


def obs_mask_space(space: gym.Space) -> bool:
    """Whether observations of `space` carry their action mask (a `Dict` with an `action_mask` key)."""
    return isinstance(space, gym.spaces.Dict) and MASK_KEY in space.spaces


def env_provides_masks(env: gym.Env) -> bool:
    """Whether `env` gives action masks: in its observations, or in the info of a reset (seed 0)."""
    if not isinstance(env.action_space, gym.spaces.Discrete):
        return False
    if obs_mask_space(env.observation_space):
        return True
    _, info = env.reset(seed=0)
    return isinstance(info, dict) and MASK_KEY in info


def as_mask(value: Any, n_actions: int) -> np.ndarray:
    """One env's mask as a bool row of `n_actions`; a row with no legal action becomes all legal."""
    row = np.asarray(value).reshape(-1)
    if row.shape != (n_actions,):
        raise UserError(f"the env's action_mask has shape {np.shape(value)}; it must have one entry per action "
                        f"({n_actions})")
    row = row.astype(bool)
    return row if row.any() else np.ones(n_actions, dtype=bool)


def single_mask(obs: Any, info: dict | None, action_space: gym.Space) -> np.ndarray | None:
    """The mask of one (not vectorised) env's observation as a batch of one row: from the observation's
    `action_mask` key, else from `info`; None when the env gives none."""
    if not isinstance(action_space, gym.spaces.Discrete):
        return None
    if isinstance(obs, dict) and MASK_KEY in obs:
        return as_mask(obs[MASK_KEY], int(action_space.n))[None]
    if info and MASK_KEY in info:
        return as_mask(info[MASK_KEY], int(action_space.n))[None]
    return None


def obs_masks(obs: dict[str, Any], n_actions: int) -> np.ndarray:
    """The masks of a batch of `Dict` observations that carry them."""
    return legal_rows(np.asarray(obs[MASK_KEY]).reshape(-1, n_actions).astype(bool))


def legal_rows(masks: np.ndarray) -> np.ndarray:
    """`masks` with every row that has no legal action made all legal (see the module docstring)."""
    empty = ~masks.any(axis=1)
    if empty.any():
        masks = masks.copy()
        masks[empty] = True
    return masks


def final_masks(next_masks: np.ndarray | None, done: np.ndarray, infos: dict) -> np.ndarray | None:
    """Masks of a step's real next observations: where an episode ended, the final observation's mask instead
    of the reset one's (a truncated episode bootstraps from it)."""
    if next_masks is None or FINAL_MASK_KEY not in infos:
        return next_masks
    out = next_masks.copy()
    rows = np.flatnonzero(done & infos[f"_{FINAL_MASK_KEY}"])
    out[rows] = infos[FINAL_MASK_KEY][rows]
    return out


def illegal_count(masks: np.ndarray, actions: np.ndarray, start: int = 0) -> int:
    """How many of `actions` (one per row) the masks forbid."""
    index = np.asarray(actions, dtype=np.int64).reshape(-1) - start
    return int((~masks[np.arange(len(index)), index]).sum())


# ---------------------------------------------------------------- choosing among legal actions (NumPy)


def masked_argmax(scores: np.ndarray, masks: np.ndarray | None) -> np.ndarray:
    """Per row, the first highest-scoring legal action (all actions where `masks` is None)."""
    if masks is None:
        return scores.argmax(axis=1)
    return np.where(legal_rows(masks), scores, -np.inf).argmax(axis=1)


def random_legal(masks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One legal action per row, uniformly among that row's legal actions."""
    return np.where(legal_rows(masks), rng.random(masks.shape), -1.0).argmax(axis=1)


def legal_actions(mask: np.ndarray) -> list[int]:
    """The legal actions of one mask row, as a list (for tabular agents' Python hot path); all actions for a
    row without any."""
    return np.flatnonzero(mask).tolist() or list(range(len(mask)))


def mask_logits(logits: Any, masks: Any) -> Any:
    """Logits (NumPy or torch) with illegal actions set to `MASKED_LOGIT`: their probability is exactly 0 (rows
    without a legal action are left as they are)."""
    if isinstance(logits, np.ndarray):
        return np.where(legal_rows(masks), logits, np.float32(MASKED_LOGIT)).astype(logits.dtype, copy=False)
    masks = masks | ~masks.any(dim=1, keepdim=True)
    return logits.masked_fill(~masks, MASKED_LOGIT)

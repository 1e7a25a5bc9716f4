"""DQN's TD maths, shared by its learners (`rlagents/agents/dqn.py`, `rlagents/sequence_learner.py`): targets,
bootstrapped next-state values (double, masked, clipped double), the TD loss and a lean gradient clip."""

from __future__ import annotations

import torch
from torch import nn


def bootstrap_weights(terminated, discounts):
    """γ^k · (1 − terminated): the weight of V(s') in a TD target (0 past a terminal state); tensors or arrays."""
    return discounts * (1.0 - terminated)


def td_targets(rewards: torch.Tensor, next_values: torch.Tensor, terminated: torch.Tensor,
               discounts: torch.Tensor) -> torch.Tensor:
    """r + γ^k · V(s') · (1 − terminated): no bootstrap past a terminal state, bootstrap past truncation."""
    return torch.addcmul(rewards, bootstrap_weights(terminated, discounts), next_values)


def next_state_values(next_q_target: torch.Tensor, next_q_online: torch.Tensor | None,
                      next_masks: torch.Tensor | None = None, clipped: bool = False) -> torch.Tensor:
    """max_a Q_target(s', a), or with double DQN Q_target(s', a*) with a* = argmax_a Q_online(s', a); with
    `next_masks` (bool, every row with a legal action) a ranges over the legal actions of s' only; `clipped`
    takes min(Q_target(s', a*), Q_online(s', a*)) (clipped double Q, Fujimoto et al. 2018)."""
    if next_masks is not None:
        if next_q_online is None:
            next_q_target = next_q_target.masked_fill(~next_masks, -torch.inf)
        else:
            next_q_online = next_q_online.masked_fill(~next_masks, -torch.inf)
    if next_q_online is None:
        return next_q_target.max(dim=1).values
    best = next_q_online.argmax(dim=1, keepdim=True)
    values = next_q_target.gather(1, best).squeeze(1)
    if clipped:
        return torch.minimum(values, next_q_online.gather(1, best).squeeze(1))
    return values


def clip_grad_norm(grads: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale `grads` in place so their global L2 norm is at most `max_norm`; returns the norm before clipping.

    Same maths as `torch.nn.utils.clip_grad_norm_`, without its per-call grouping of tensors by device and
    dtype, which costs more than the arithmetic for small networks.
    """
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    # On a CPU, reading the norm is free: far below max_norm the scale is exactly 1 and the multiply is skipped.
    if total.device.type != "cpu" or float(total) >= 0.999 * max_norm:
        torch._foreach_mul_(grads, (max_norm / (total + 1e-6)).clamp_(max=1.0))
    return total


def td_loss(errors: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean Huber (δ = 1) or squared loss over the last axis of TD errors (Q(s, a) − target)."""
    loss_fn = nn.functional.smooth_l1_loss if kind == "huber" else nn.functional.mse_loss
    return loss_fn(errors, torch.zeros_like(errors), reduction="none").mean(dim=-1)

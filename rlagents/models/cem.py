"""The cross-entropy method over action sequences, for a batch of start states at once.

Each call refines one sampling distribution per start state over `horizon`-step action sequences:
categorical per step for discrete actions, a diagonal Gaussian per step (clipped to [-1, 1]) for continuous
ones. `score` rates all candidates of all start states in one call, so the work is tensor work over
start states x candidates (x whatever the scorer adds, e.g. ensemble members), not Python loops.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Scorer = Callable[[torch.Tensor], torch.Tensor]


def elite_indices(scores: torch.Tensor, elites: int) -> torch.Tensor:
    """Indices (B, elites) of the best-scoring candidates of every start state."""
    return torch.topk(scores, elites, dim=1, sorted=False).indices


def cem_categorical(score: Scorer, probs: torch.Tensor, *, candidates: int, elites: int, iterations: int,
                    momentum: float, generator: torch.Generator, keep: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Refine per-step action probabilities `probs` (B, H, A); returns (probs, best sequence (B, H), its score).

    `score` maps sequences (B, N, H) of action indices to scores (B, N). New probabilities are the elites'
    action frequencies, blended with the old ones by `momentum` (the weight kept from the old). `keep`
    (B, H), e.g. the previous step's best plan shifted by one, is always among the candidates, and the best
    sequence seen in any iteration is kept as one, so the plan returned is never worse than those."""
    b, h, n_actions = probs.shape
    best = torch.full((b,), -torch.inf)
    best_seq = keep
    for _ in range(iterations):
        cdf = probs.cumsum(dim=-1)
        u = torch.rand(b, candidates, h, 1, generator=generator)
        seqs = (u > cdf[:, None, :, :]).sum(dim=-1).clamp_(max=n_actions - 1)  # inverse-CDF sampling
        if best_seq is not None:
            seqs[:, 0] = best_seq
        scores = score(seqs)
        top = elite_indices(scores, elites)
        top_score, arg = scores.max(dim=1)
        best = top_score
        best_seq = seqs[torch.arange(b), arg]
        elite_seqs = seqs.gather(1, top[:, :, None].expand(b, elites, h))
        freq = torch.nn.functional.one_hot(elite_seqs, n_actions).float().mean(dim=1)
        probs = momentum * probs + (1.0 - momentum) * freq
    return probs, best_seq, best


def cem_gaussian(score: Scorer, mean: torch.Tensor, std: torch.Tensor, *, candidates: int, elites: int,
                 iterations: int, momentum: float, generator: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Refine a Gaussian over sequences in [-1, 1]: mean and std (B, H, D); returns (mean, std, best score).

    `score` maps sequences (B, N, H, D) to scores (B, N). The distribution's mean itself is always one of
    the candidates, so a warm-started plan is never lost to sampling noise."""
    b, h, d = mean.shape
    best = torch.full((b,), -torch.inf)
    for _ in range(iterations):
        noise = torch.randn(b, candidates, h, d, generator=generator)
        noise[:, 0] = 0.0
        seqs = (mean[:, None] + std[:, None] * noise).clamp_(-1.0, 1.0)
        scores = score(seqs)
        top = elite_indices(scores, elites)
        best = torch.maximum(best, scores.gather(1, top).max(dim=1).values)
        elite_seqs = seqs.gather(1, top[:, :, None, None].expand(b, elites, h, d))
        mean = momentum * mean + (1.0 - momentum) * elite_seqs.mean(dim=1)
        std = momentum * std + (1.0 - momentum) * elite_seqs.std(dim=1, unbiased=False)
    return mean, std, best

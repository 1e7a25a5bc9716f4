"""Memory: a recurrent core (LSTM or GRU) between an agent's backbone and its head, and the hidden states of
the episodes an agent plays.

A network with memory is backbone → `RecurrentCore` → head. The backbone (MLP, CNN, `Dict`) sees one
observation at a time, exactly as in a feed-forward network, so a pretrained classifier CNN still loads into
its image branch; the core carries a hidden state from step to step of an episode; the head reads the core's
output instead of the backbone's features.

Episodes in a vector env end at different steps, so every call says which envs begin a new episode at each
step (`starts`): their state is zeroed before that step. `forward` runs a whole (T, B) sequence — the
learner's view, recomputing states from a stored initial state — and `step` one step of a batch — the
actor's view. `Memory` holds the states of the episodes an agent is playing (its training envs, or a greedy
caller's batch) and which of them begin at the next step.
"""

from __future__ import annotations

import itertools
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

RecurrentKind = Literal["none", "lstm", "gru"]
#: a core's hidden state: (h, c) for an LSTM, (h,) for a GRU; each tensor (batch, hidden)
State = tuple[torch.Tensor, ...]


class RecurrentCore(nn.Module):
    """An LSTM or GRU layer over backbone features, with per-env resets at episode starts.

    Weights are orthogonal and biases zero, as sb3-contrib's RecurrentPPO initialises its LSTMs.
    """

    def __init__(self, kind: Literal["lstm", "gru"], in_features: int, hidden: int):
        super().__init__()
        self.kind = kind
        self.rnn = (nn.LSTM if kind == "lstm" else nn.GRU)(in_features, hidden)
        for name, param in self.rnn.named_parameters():
            if name.startswith("weight"):
                nn.init.orthogonal_(param, 1.0)
            else:
                nn.init.zeros_(param)
        self.out_features = hidden

    def initial_state(self, batch: int) -> State:
        """The state of `batch` episodes that have not begun: zeros."""
        weight = self.rnn.weight_hh_l0
        zeros = torch.zeros(batch, self.out_features, dtype=weight.dtype, device=weight.device)
        return (zeros, zeros.clone()) if self.kind == "lstm" else (zeros,)

    def forward(self, x: torch.Tensor, state: State, starts: torch.Tensor | np.ndarray
                ) -> tuple[torch.Tensor, State]:
        """Outputs (T, B, hidden) of features `x` (T, B, F) from `state`, zeroing env b's state before step t
        where `starts[t, b]`; returns them and the state after the last step.

        The sequence is cut only at steps where some env begins an episode, and each piece runs in one call
        of the fused LSTM/GRU, so long episodes cost a handful of calls, not one per step."""
        starts = torch.as_tensor(starts, dtype=torch.bool, device=x.device)
        cuts = (torch.nonzero(starts[1:].any(dim=1)).flatten() + 1).tolist()
        bounds = [0, *cuts, x.shape[0]]
        outs = []
        for begin, end in itertools.pairwise(bounds):
            state = reset_rows(state, starts[begin])
            out, state = self._run(x[begin:end], state)
            outs.append(out)
        return (outs[0] if len(outs) == 1 else torch.cat(outs)), state

    def step(self, x: torch.Tensor, state: State, starts: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, State]:
        """One step: outputs (B, hidden) of features `x` (B, F), env b's state zeroed first where `starts[b]`."""
        starts = torch.as_tensor(starts, dtype=torch.bool, device=x.device)
        out, state = self._run(x.unsqueeze(0), reset_rows(state, starts))
        return out[0], state

    def _run(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        if self.kind == "lstm":
            out, (h, c) = self.rnn(x, (state[0].unsqueeze(0), state[1].unsqueeze(0)))
            return out, (h[0], c[0])
        out, h = self.rnn(x, state[0].unsqueeze(0))
        return out, (h[0],)


def reset_rows(state: State, starts: torch.Tensor) -> State:
    """`state` with the rows where `starts` is True zeroed (a `where`, so no NaN survives a reset)."""
    if not bool(starts.any()):
        return state
    keep = ~starts.unsqueeze(1)
    return tuple(torch.where(keep, s, torch.zeros((), dtype=s.dtype, device=s.device)) for s in state)


def sequence_features(backbone: nn.Module, core: RecurrentCore, obs: Any, state: State,
                      starts: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, State]:
    """The core's outputs, flattened to (T·B, hidden), for a (T, B) sequence of observations given flat as
    T·B rows in time-major order (row t·B + b is env b's step t): the backbone sees every row at once."""
    steps, batch = np.shape(starts)[:2]
    features = backbone(obs)
    out, state = core(features.reshape(steps, batch, -1), state, starts)
    return out.reshape(steps * batch, -1), state


class Memory:
    """The hidden states of the episodes an agent plays side by side (one row each), per named core (e.g. a
    policy's and a critic's), and which rows begin a new episode at the next step.

    A memory of `n` rows (the training envs) is allocated at once, so a fresh agent's `state_dict` has the
    shapes a checkpoint's must have; one without `n` (greedy play) takes its size from the first batch, and
    starts over whenever the batch size changes.
    """

    def __init__(self, cores: dict[str, RecurrentCore], n: int | None = None):
        self.cores = cores
        self.states: dict[str, State] = {}
        self.starts: np.ndarray | None = None
        if n is not None:
            self.starts = np.ones(n, bool)
            self.states = {name: core.initial_state(n) for name, core in cores.items()}

    def begin(self, starts: np.ndarray | None) -> None:
        """Rows in mask `starts` begin new episodes at the next step (None: every row, batch size unknown)."""
        if starts is None or self.starts is None or len(starts) != len(self.starts):
            self.states, self.starts = {}, None if starts is None else np.ones(len(starts), bool)
            return
        self.starts |= np.asarray(starts, bool)

    def next_starts(self, batch: int) -> np.ndarray:
        """The rows beginning an episode at the step about to be taken on `batch` rows; afterwards none do."""
        if self.starts is None or len(self.starts) != batch:
            self.states, starts = {}, np.ones(batch, bool)
        else:
            starts = self.starts.copy()
        self.starts = np.zeros(batch, bool)
        return starts

    def state(self, name: str, batch: int) -> State:
        """Core `name`'s state of the rows (zeros before its first step)."""
        state = self.states.get(name)
        return self.cores[name].initial_state(batch) if state is None else state

    def step(self, name: str, x: torch.Tensor, starts: np.ndarray) -> torch.Tensor:
        """Core `name`'s outputs for features `x` (B, F) at the step whose `next_starts` are `starts`."""
        out, self.states[name] = self.cores[name].step(x, self.state(name, len(x)), starts)
        return out

    def state_dict(self) -> dict[str, Any]:
        """NumPy arrays (their shapes follow the number of rows, which evaluation changes)."""
        return {"starts": np.array(self.starts if self.starts is not None else np.zeros(0, bool)),
                "states": {name: [s.detach().cpu().numpy().copy() for s in state]
                           for name, state in self.states.items()}}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Take saved states back where they fit these rows and cores; otherwise every row starts afresh."""
        starts = np.asarray(saved["starts"], bool)
        states = saved.get("states", {})
        n = None if self.starts is None else len(self.starts)
        fits = n is not None and starts.shape == (n,) and set(states) == set(self.cores) and all(
            [np.shape(s) for s in states[name]] == [tuple(t.shape) for t in self.cores[name].initial_state(n)]
            for name in self.cores)
        if not fits:
            self.__init__(self.cores, n)
            return
        device = next(iter(self.cores.values())).rnn.weight_hh_l0.device
        self.starts = starts.copy()
        self.states = {name: tuple(torch.as_tensor(np.asarray(s), dtype=torch.float32, device=device)
                                   for s in states[name]) for name in self.cores}


def episode_features(backbone: nn.Module, core: RecurrentCore, obs: Any, lengths: list[int]) -> torch.Tensor:
    """The core's outputs (Σ lengths, hidden) for whole episodes given one after the other as rows, each from a
    zero state: the backbone sees every row at once, and the episodes run side by side as one (max length,
    episodes) sequence, padded at the end (padding comes after every real step, so it changes none)."""
    features = backbone(obs)
    device = features.device
    steps = torch.cat([torch.arange(n, device=device) for n in lengths])
    episode = torch.cat([torch.full((n,), e, device=device) for e, n in enumerate(lengths)])
    padded = features.new_zeros(max(lengths), len(lengths), features.shape[1])
    padded[steps, episode] = features
    starts = torch.zeros(max(lengths), len(lengths), dtype=torch.bool, device=device)
    starts[0] = True
    out, _ = core(padded, core.initial_state(len(lengths)), starts)
    return out[steps, episode]

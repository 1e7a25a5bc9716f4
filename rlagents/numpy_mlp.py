"""Every NumPy computation of an MLP network: acting (`NumpyMLP.scores`) and DQN's hand-written TD gradients
(`NumpyMLP.forward` / `backward`, `adam_step`), for fast small networks on a CPU.

Acting on one or a few observations is dominated by torch's per-call dispatch (~35 µs for a 128×128 MLP
here, against ~11 µs in NumPy). A double-DQN gradient step on a 2×128 MLP with batch 64 is ~110 µs of matrix
arithmetic on this CPU; through autograd it costs ~600 µs, and the same ops called one by one through torch
~430 µs, because each of its ~40 small ops pays torch's dispatch overhead (3–8 µs). The same maths in NumPy
pays ~1 µs per op: ~260 µs a step (`benchmarks/dqn_step_cost.py`).

`NumpyMLP` works on NumPy views of the network's own parameter storage, so its updates are the network's,
and `load_state_dict`, checkpoints and acting see them at once. Gradients are written into preallocated
arrays whose torch views feed Adam's fused kernel (`adam_step`), so the optimizer state stays torch's own
(checkpoints are the same as the autograd path's). The maths is autograd's; the rounding is not bit for bit
(NumPy's BLAS sums in another order): tests/test_numpy_mlp.py checks agreement to float32 precision.
NumPy's BLAS runs on one thread (`rlagents.threads.set_cpu_threads`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from rlagents.networks import MLPBackbone, Net, QHead


class NumpyMLP:
    """`head(backbone(x))` for an `MLPBackbone` and a linear head on a CPU, as a list of linear layers with
    the backbone's activation (ReLU or tanh) between them, computed in NumPy on views of the parameters.

    `scores` is the forward pass for acting; `forward` also returns the activations `backward` needs, and
    `backward` writes the parameter gradients into `grads` (in `parameters` order; `grad_tensors` are their
    torch views).
    """

    def __init__(self, backbone: MLPBackbone, head: nn.Linear):
        linears = [*backbone.linears, head]
        self.parameters = [p for layer in linears for p in (layer.weight, layer.bias)]
        self.one_hot = backbone.one_hot
        self.tanh = backbone.activation == "tanh"
        # one-hot rows of Discrete observations are looked up, not rebuilt each round
        self._one_hot_rows = np.eye(self.one_hot, dtype=np.float32) if self.one_hot is not None else None
        self.layers = [(layer.weight.detach().numpy(), layer.bias.detach().numpy()) for layer in linears]
        self.grads = [np.zeros_like(a) for weight, bias in self.layers for a in (weight, bias)]
        self.grad_tensors = [torch.from_numpy(g) for g in self.grads]

    @staticmethod
    def applies_to(backbone: nn.Module, head: nn.Module) -> bool:
        """Whether this class computes `head(backbone(x))`: an `MLPBackbone`, a linear head, float32 on a CPU."""
        return (isinstance(backbone, MLPBackbone) and isinstance(head, nn.Linear)
                and all(p.device.type == "cpu" and p.dtype == torch.float32
                        for p in [*backbone.parameters(), *head.parameters()]))

    @classmethod
    def of(cls, backbone: nn.Module, head: nn.Module) -> NumpyMLP | None:
        """The NumPy version of `head(backbone(x))`, or None where `applies_to` says it does not apply."""
        return cls(backbone, head) if cls.applies_to(backbone, head) else None

    # ------------------------------------------------------------ acting

    def scores(self, obs: np.ndarray) -> np.ndarray:
        """Outputs for a batch of observations (a one-hot input times Wᵀ is a row lookup of Wᵀ)."""
        if self.one_hot is not None:
            w, b = self.layers[0]
            x = w.T[np.asarray(obs, dtype=np.int64).reshape(-1)] + b
        else:
            x = np.asarray(obs, dtype=np.float32).reshape(len(obs), -1) @ self.layers[0][0].T
            x += self.layers[0][1]
        for w, b in self.layers[1:]:  # every layer but the head is followed by the activation
            self._activate(x)
            x = x @ w.T
            x += b
        return x

    def _activate(self, x: np.ndarray) -> None:
        """The hidden layers' activation, in place."""
        if self.tanh:
            np.tanh(x, out=x)
        else:
            np.maximum(x, 0.0, out=x)

    # ------------------------------------------------------------ learning

    def inputs(self, obs: np.ndarray) -> np.ndarray:
        """The first layer's input, as `MLPBackbone.forward` builds it: float32 rows, one-hot for Discrete."""
        if self.one_hot is not None:
            return self._one_hot_rows[np.asarray(obs, dtype=np.int64).reshape(-1)]
        return np.asarray(obs, dtype=np.float32).reshape(len(obs), -1)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """Output for inputs `x` (from `inputs`), and every layer's input (after its activation) for `backward`."""
        activations = [x]
        for weight, bias in self.layers[:-1]:
            x = x @ weight.T
            x += bias
            self._activate(x)
            activations.append(x)
        weight, bias = self.layers[-1]
        out = x @ weight.T
        out += bias
        return out, activations

    def outputs(self, x: np.ndarray) -> np.ndarray:
        """Output only."""
        return self.forward(x)[0]

    def backward(self, activations: list[np.ndarray], grad_out: np.ndarray) -> list[np.ndarray]:
        """Gradients of the parameters, given the gradient of the output, written into `grads`: [W₀, b₀, W₁, …]."""
        grads = self.grads
        grad = grad_out
        for i in range(len(self.layers) - 1, -1, -1):
            grad.sum(axis=0, out=grads[2 * i + 1])
            np.matmul(grad.T, activations[i], out=grads[2 * i])
            if i > 0:
                grad = grad @ self.layers[i][0]
                if self.tanh:  # tanh' = 1 − tanh² (computed in one scratch array)
                    slope = np.multiply(activations[i], activations[i])
                    grad *= np.subtract(1.0, slope, out=slope)
                else:  # ReLU's backward: no gradient where the unit was off
                    grad *= activations[i] > 0
        return grads

    def clip_gradients(self, max_norm: float) -> float:
        """Scale `grads` so their global L2 norm is at most `max_norm` (`torch.nn.utils.clip_grad_norm_`'s
        rule); returns the norm before clipping."""
        total = math.sqrt(sum(float(np.vdot(g, g)) for g in self.grads))
        scale = max_norm / (total + 1e-6)
        if scale < 1.0:
            for g in self.grads:
                g *= scale
        return total


def numpy_mlp_forward(backbone: nn.Module, head: nn.Module) -> Callable[[np.ndarray], np.ndarray] | None:
    """A NumPy function computing `head(backbone(obs))` on CPU (`NumpyMLP.scores`), or None where it does not
    apply (see `NumpyMLP.applies_to`)."""
    mlp = NumpyMLP.of(backbone, head)
    return mlp.scores if mlp is not None else None


def refuse_recurrent(net: nn.Module, what: str) -> None:
    """Raise a one-line `ValueError` when `net` is a `Net` with a recurrent core, which `what` (a feed-forward
    NumPy computation of backbone → head) would silently skip."""
    core = getattr(net, "core", None) if isinstance(net, Net) else None
    if core is not None:
        raise ValueError(f"{what} computes feed-forward Q-networks only: this one has a recurrent core "
                         f"({type(core).__name__}), whose hidden state decides its Q-values; act through the "
                         f"network's step() instead")


def numpy_greedy_scores(net: Net) -> Callable[[np.ndarray], np.ndarray] | None:
    """NumPy scores whose row-wise argmax equals a Q-network's (see `numpy_mlp_forward`).

    A dueling head's Q and advantage share their argmax, so only the advantage stream is computed. A network
    with a recurrent core is refused (`ValueError`): its Q-values depend on the hidden state, which these
    feed-forward scores would skip.
    """
    refuse_recurrent(net, "numpy_greedy_scores")
    if not isinstance(net.head, QHead):
        return None
    return numpy_mlp_forward(net.backbone, net.head.advantage)


def numpy_q_network(net: nn.Module) -> NumpyMLP | None:
    """`net` as a `NumpyMLP` when it is a plain Q-network DQN's NumPy learner can compute: an MLP backbone and
    a single-stream Q head, float32 on a CPU; None otherwise. A network with a recurrent core is refused
    (`ValueError`), as by `numpy_greedy_scores`."""
    refuse_recurrent(net, "numpy_q_network")
    if not (isinstance(net, Net) and isinstance(net.head, QHead) and net.head.value is None):
        return None
    return NumpyMLP.of(net.backbone, net.head.advantage)


_ONES: dict[tuple, list[torch.Tensor]] = {}


def _ones(n: int, like: torch.Tensor) -> list[torch.Tensor]:
    """`n` tensors holding 1, of `like`'s dtype and device (kept: never written to)."""
    key = (n, like.dtype, like.device)
    if key not in _ONES:
        _ONES[key] = [torch.ones((), dtype=like.dtype, device=like.device) for _ in range(n)]
    return _ONES[key]


def adam_step(optimizer: torch.optim.Adam, params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
    """`optimizer.step()` with `grads` as the gradients of `params` (one parameter group).

    A fused Adam whose state exists is stepped by calling its kernel directly, as `Optimizer.step` would,
    without the per-call checks and grouping that cost more than the kernel for small networks; otherwise
    (first step, non-fused) the gradients are set and `step()` runs as usual.
    """
    group = optimizer.param_groups[0]
    states = [optimizer.state.get(p) for p in params]
    if not group["fused"] or any(not s for s in states) or group["amsgrad"] or group["weight_decay"]:
        for p, g in zip(params, grads):
            p.grad = g
        optimizer.step()
        for p in params:  # the gradient buffers are reused: the parameters must not keep them as .grad
            p.grad = None
        return
    steps = [s["step"] for s in states]
    torch._foreach_add_(steps, _ones(len(steps), steps[0]))  # a list of ones: ~5 µs; the scalar 1: ~30 µs
    beta1, beta2 = group["betas"]
    torch._fused_adam_(params, grads, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states], [],
                       steps, amsgrad=False, lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=0.0,
                       eps=group["eps"], maximize=group["maximize"], grad_scale=None, found_inf=None)

"""Forward and backward of an MLP Q-network written out by hand, for fast TD updates on small networks.

On a CPU a DQN gradient step on a 2×256 MLP spends ~40% of its time in autograd's bookkeeping (graph
nodes, `Optimizer.step`'s per-call grouping) rather than in arithmetic. `ManualMLP` calls the aten ops
that autograd's backward would call — `addmm` forward; `mm` with the same operand layouts, `sum` and
`threshold_backward` backward — in the same order, so the gradients are bit-identical to autograd's
(tests/test_manual_mlp.py checks this), at about 70% of the cost.
"""

from __future__ import annotations

import torch
from torch import nn

from rlagents.networks import MLPBackbone, Net, QHead

_relu_backward = torch.ops.aten.threshold_backward  # what autograd's ReluBackward calls


class ManualMLP:
    """`Net(MLPBackbone, QHead)` (without a dueling stream) as a list of linear layers, ReLU between them.

    `forward` returns the output and the activations `backward` needs; `backward` returns the parameter
    gradients in `net.parameters()` order. Both run without autograd (call them under `torch.no_grad()`).
    """

    def __init__(self, net: Net):
        backbone = net.backbone
        self.one_hot = backbone.one_hot
        self.layers: list[nn.Linear] = [*backbone.linears, net.head.advantage]

    @staticmethod
    def applies_to(net: nn.Module) -> bool:
        """Whether `net` is the plain MLP Q-network this class computes."""
        return (isinstance(net, Net) and isinstance(net.backbone, MLPBackbone) and isinstance(net.head, QHead)
                and net.head.value is None and all(p.requires_grad for p in net.parameters()))

    def inputs(self, obs: torch.Tensor) -> torch.Tensor:
        """The first layer's input, as `MLPBackbone.forward` builds it."""
        if self.one_hot is not None:
            return nn.functional.one_hot(obs.long().reshape(-1), self.one_hot).float()
        return obs.reshape(obs.shape[0], -1).float()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Output for inputs `x`, and every layer's input (after its ReLU) for `backward`."""
        activations = [x]
        for layer in self.layers[:-1]:
            x = torch.addmm(layer.bias, x, layer.weight.t()).relu_()
            activations.append(x)
        head = self.layers[-1]
        return torch.addmm(head.bias, x, head.weight.t()), activations

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Output only (no activations kept)."""
        for layer in self.layers[:-1]:
            x = torch.addmm(layer.bias, x, layer.weight.t()).relu_()
        head = self.layers[-1]
        return torch.addmm(head.bias, x, head.weight.t())

    def backward(self, activations: list[torch.Tensor], grad_out: torch.Tensor) -> list[torch.Tensor]:
        """Gradients of the parameters given the gradient of the output: [W₀, b₀, W₁, b₁, …]."""
        grads: list[torch.Tensor] = []
        grad = grad_out
        for i in range(len(self.layers) - 1, -1, -1):
            # addmm's backward: the bias gets the batch sum; weight.t() is a transposed view, so autograd
            # computes its gradient as (gradᵀ · input) — the weight's own layout.
            grads.append(grad.sum(0))
            grads.append(grad.t().mm(activations[i]))
            if i > 0:
                grad = _relu_backward(grad.mm(self.layers[i].weight), activations[i], 0.0)
        grads.reverse()
        return grads


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
        return
    steps = [s["step"] for s in states]
    torch._foreach_add_(steps, 1)
    beta1, beta2 = group["betas"]
    torch._fused_adam_(params, grads, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states], [],
                       steps, amsgrad=False, lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=0.0,
                       eps=group["eps"], maximize=group["maximize"], grad_scale=None, found_inf=None)

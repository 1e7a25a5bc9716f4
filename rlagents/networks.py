"""Networks compose as backbone + head.

A backbone turns an observation batch into a feature vector of size `features_dim`; a head turns features
into what an agent needs (Q-values, logits, class scores). The digit classifier and every agent use the
same backbone classes, so a trained backbone's `state_dict` loads unchanged into a Q-network or a policy.
`Dict` observations get one backbone per key (`DictBackbone`), their features joined.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlagents.config import param
from rlagents.errors import ConfigError, UnsupportedSpaceError
from rlagents.recurrent import RecurrentCore, RecurrentKind, State, sequence_features
from rlagents.validate import require_memory

ChannelOrder = Literal["auto", "first", "last"]
Activation = Literal["relu", "tanh"]  # of MLP hidden layers
_CHANNEL_COUNTS = (1, 2, 3, 4)
MAX_WIDTH = 65_536  # units of one layer; torch would try to allocate whatever it is asked for
MAX_CHANNELS = 4_096
BYTES_PER_PARAMETER = 16  # float32 weights, gradients and two Adam moments


def image_layout(shape: tuple[int, ...], order: ChannelOrder = "auto") -> tuple[tuple[int, int, int], bool]:
    """Return the (C, H, W) shape of an image observation and whether it arrives channel-last.

    A 2-D shape is a single-channel image. With `order="auto"`, a 3-D shape is channel-first when its first
    axis looks like a channel count (1–4) and its last does not, and channel-last the other way round;
    anything else is ambiguous and refused rather than guessed.
    """
    if len(shape) == 2:
        return (1, shape[0], shape[1]), False
    if len(shape) != 3:
        raise UnsupportedSpaceError(f"image observations must be 2-D or 3-D, got shape {shape}")
    first, last = shape[0] in _CHANNEL_COUNTS, shape[2] in _CHANNEL_COUNTS
    if order == "first" or (order == "auto" and first and not last):
        return (shape[0], shape[1], shape[2]), False
    if order == "last" or (order == "auto" and last and not first):
        return (shape[2], shape[0], shape[1]), True
    raise UnsupportedSpaceError(
        f"cannot tell the channel axis of image shape {shape}: set channel_order to first or last")


class MLPBackbone(nn.Module):
    """Fully connected layers over flattened vector observations (or one-hot encoded discrete ones)."""

    def __init__(self, obs_space: gym.Space, hidden: tuple[int, ...] = (64, 64), activation: Activation = "relu"):
        super().__init__()
        if isinstance(obs_space, gym.spaces.Discrete):
            self.one_hot: int | None = int(obs_space.n)
            in_dim = int(obs_space.n)
        elif isinstance(obs_space, gym.spaces.Box):
            self.one_hot = None
            in_dim = int(np.prod(obs_space.shape))
        else:
            raise UnsupportedSpaceError(f"MLP backbone needs a Box or Discrete observation space, got {obs_space}")
        self.activation = activation
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(in_dim, width), nn.Tanh() if activation == "tanh" else nn.ReLU()]
            in_dim = width
        self.layers = nn.Sequential(*layers)
        self.linears = [m for m in self.layers if isinstance(m, nn.Linear)]
        self.features_dim = in_dim

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if self.one_hot is not None:
            x = nn.functional.one_hot(obs.long().reshape(-1), self.one_hot).float()
        else:
            x = obs.reshape(obs.shape[0], -1).float()
        # Calling the layers functionally skips nn.Module's per-call hook machinery (~5 µs a layer), which
        # dominates the cost of these small networks on a CPU.
        if self.activation == "tanh":
            for layer in self.linears:
                x = nn.functional.linear(x, layer.weight, layer.bias).tanh_()
            return x
        for layer in self.linears:
            x = nn.functional.linear(x, layer.weight, layer.bias).relu_()
        return x


class _ImageBody(nn.Module):
    """What every image backbone shares: `convs` followed by one dense ReLU layer sized by a dry forward pass,
    uint8 pixels scaled inside the network, and channel-last inputs permuted here."""

    def _finish(self, obs_space: gym.spaces.Box, convs: nn.Sequential, features_dim: int) -> None:
        c, h, w = self.input_chw
        self.scale = 1.0 / 255.0 if obs_space.dtype == np.uint8 else 1.0
        self.convs = convs
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, c, h, w)).shape[1]
        self.dense = nn.Sequential(nn.Linear(flat, features_dim), nn.ReLU())
        self.features_dim = features_dim

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.float() * self.scale
        if x.dim() == 3:  # (B, H, W) single-channel images
            x = x.unsqueeze(1)
        elif self.channel_last:
            x = x.permute(0, 3, 1, 2)
        return self.dense(self.convs(x))


class ConvBackbone(_ImageBody):
    """The classic classifier shape: conv–pool–conv–pool–conv, then one dense layer.

    3×3 convolutions keep the spatial size, so the same backbone serves 8×8 digits and 84×84 frames; the
    dense layer is sized by a dry forward pass. uint8 pixels are scaled to [0, 1] inside the network, and
    channel-last inputs are permuted here, so replay buffers can store raw observations.
    """

    def __init__(self, obs_space: gym.spaces.Box, channels: tuple[int, int, int] = (32, 64, 64),
                 features_dim: int = 256, channel_order: ChannelOrder = "auto"):
        super().__init__()
        if not isinstance(obs_space, gym.spaces.Box):
            raise UnsupportedSpaceError(f"CNN backbone needs a Box image space, got {obs_space}")
        if len(channels) != 3:
            raise UnsupportedSpaceError(f"CNN backbone takes three conv widths, got {channels}")
        (c, h, w), self.channel_last = image_layout(tuple(obs_space.shape), channel_order)
        self.input_chw = (c, h, w)
        c1, c2, c3 = channels
        self._finish(obs_space, nn.Sequential(
            nn.Conv2d(c, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(), nn.Flatten(),
        ), features_dim)


class NatureCNN(_ImageBody):
    """The Nature-DQN network's body (Mnih et al. 2015): conv 32 8×8 stride 4, conv 64 4×4 stride 2, conv 64
    3×3 stride 1, then a dense layer of 512 — for 84×84 Atari frame stacks (`network: nature`).

    Like `ConvBackbone`, it scales uint8 pixels inside the network and accepts channel-last inputs.
    """

    def __init__(self, obs_space: gym.spaces.Box, features_dim: int = 512, channel_order: ChannelOrder = "auto"):
        super().__init__()
        if not isinstance(obs_space, gym.spaces.Box):
            raise UnsupportedSpaceError(f"Nature CNN needs a Box image space, got {obs_space}")
        (c, h, w), self.channel_last = image_layout(tuple(obs_space.shape), channel_order)
        if min(h, w) < 36:  # the three valid convolutions need at least 36 pixels a side
            raise UnsupportedSpaceError(f"Nature CNN needs images of at least 36×36 pixels, got {h}×{w} "
                                        f"(use network cnn for small images)")
        self.input_chw = (c, h, w)
        self._finish(obs_space, nn.Sequential(
            nn.Conv2d(c, 32, 8, stride=4), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(), nn.Flatten(),
        ), features_dim)


BackboneKind = Literal["auto", "mlp", "cnn", "nature"]


def is_image_space(space: gym.Space) -> bool:
    """Box spaces of rank 2 or 3 (and uint8 ones of any rank ≥ 2) are images."""
    return isinstance(space, gym.spaces.Box) and len(space.shape) in (2, 3) and (
        space.dtype == np.uint8 or min(space.shape[-2:]) >= 8)


class DictBackbone(nn.Module):
    """One backbone per key of a `Dict` observation space (CNN for images, MLP for vectors and discrete
    values, chosen by `make_backbone`), their features concatenated in the space's key order.

    Each branch is an ordinary backbone, so a trained `ConvBackbone`'s `state_dict` loads unchanged into
    `branches[key]` of the image key. `fusion` adds ReLU layers over the joined features: without them a
    linear head can only add the keys' contributions, not combine them (e.g. "the dial shows the digit").
    `branch_norm` standardises each key's features (a layer norm without learned scale) before they are joined:
    a pretrained CNN's features can be tens of times larger than a fresh branch's, which the fusion layer then
    barely sees.
    """

    def __init__(self, obs_space: gym.spaces.Dict, *, hidden: tuple[int, ...] = (64, 64),
                 cnn_channels: tuple[int, int, int] = (32, 64, 64), cnn_features: int = 256,
                 channel_order: ChannelOrder = "auto", fusion: tuple[int, ...] = (), activation: Activation = "relu",
                 branch_norm: bool = False):
        super().__init__()
        if not isinstance(obs_space, gym.spaces.Dict) or not obs_space.spaces:
            raise UnsupportedSpaceError(f"Dict backbone needs a non-empty Dict observation space, got {obs_space}")
        bad = [k for k in obs_space.spaces if not isinstance(k, str) or not k or "." in k]
        if bad:  # nn.ModuleDict names become state_dict prefixes, where a dot would be ambiguous
            raise UnsupportedSpaceError(f"Dict observation keys must be non-empty strings without dots, got {bad}")
        self.keys = list(obs_space.spaces)
        self.branches = nn.ModuleDict({
            key: make_backbone(space, hidden=hidden, cnn_channels=cnn_channels, cnn_features=cnn_features,
                               channel_order=channel_order, activation=activation)
            for key, space in obs_space.spaces.items()})
        self.branch_norm = branch_norm
        # python ints, not traced shapes: ONNX export keeps the layer norm's width static
        self.widths = {key: branch.features_dim for key, branch in self.branches.items()}
        joined = sum(self.widths.values())
        layers: list[nn.Module] = []
        for width in fusion:
            layers += [nn.Linear(joined, width), nn.ReLU()]
            joined = width
        self.fusion = nn.Sequential(*layers)
        self.features_dim = joined

    def forward(self, obs: dict[str, torch.Tensor], features: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Joined features; `features` supplies some branches' outputs already computed (frozen branches)."""
        features = features or {}
        parts = [features[key] if key in features else self.branches[key].forward(obs[key]) for key in self.keys]
        if self.branch_norm:
            parts = [nn.functional.layer_norm(part, (self.widths[key],)) for key, part in zip(self.keys, parts)]
        return self.fusion(torch.cat(parts, dim=1))

    def frozen_keys(self) -> list[str]:
        """Keys whose branch has no trainable parameters (a frozen pretrained backbone)."""
        return [key for key, branch in self.branches.items() if not any(p.requires_grad for p in branch.parameters())]


def make_backbone(obs_space: gym.Space, kind: BackboneKind = "auto", *, hidden: tuple[int, ...] = (64, 64),
                  cnn_channels: tuple[int, int, int] = (32, 64, 64), cnn_features: int = 256,
                  channel_order: ChannelOrder = "auto", fusion: tuple[int, ...] = (),
                  activation: Activation = "relu", branch_norm: bool = False) -> nn.Module:
    """Choose the backbone from the observation space: CNN for images, MLP for vectors and discrete states,
    and for a `Dict` space one of those per key (`DictBackbone`). `kind="nature"` is the Nature-DQN CNN."""
    if isinstance(obs_space, gym.spaces.Dict):
        if kind != "auto":
            raise UnsupportedSpaceError(f"backbone {kind!r} cannot take a Dict observation space: each key gets "
                                        f"its own backbone; use backbone auto")
        return DictBackbone(obs_space, hidden=hidden, cnn_channels=cnn_channels, cnn_features=cnn_features,
                            channel_order=channel_order, fusion=fusion, activation=activation,
                            branch_norm=branch_norm)
    if kind == "auto":
        kind = "cnn" if is_image_space(obs_space) else "mlp"
    if kind == "cnn":
        return ConvBackbone(obs_space, cnn_channels, cnn_features, channel_order)
    if kind == "nature":
        return NatureCNN(obs_space, channel_order=channel_order)
    return MLPBackbone(obs_space, hidden, activation)


@dataclass
class NetworkConfig:
    """The network settings every deep agent shares; an agent's config dataclass inherits them, so a new
    kind of network is added here and in `build_backbone`, not in every agent."""

    network: BackboneKind = param("auto", "network body; auto picks cnn for images (and one body per key for "
                                  "Dict observations); nature is the Nature-DQN CNN for Atari frames")
    backbone: str | None = param(None, "pretrained CNN backbone to load into the image branch: a classifier "
                                 "run directory or checkpoint JSON (python -m rlagents.classify)")
    freeze_backbone: bool = param(True, "keep a pretrained backbone frozen (false: fine-tune it)")
    fusion: tuple[int, ...] = param((256,), "Dict observations: ReLU layers over the joined per-key features",
                                    low=1, high=MAX_WIDTH)
    branch_norm: bool = param(False, "Dict observations: standardise each key's features (layer norm, no learned "
                              "scale) before they are joined, so a pretrained CNN's large features do not drown "
                              "the other keys'")
    hidden: tuple[int, ...] = param((64, 64), "MLP hidden layer widths", low=1, high=MAX_WIDTH)
    activation: Activation = param("relu", "activation of the MLP hidden layers (SB3's and CleanRL's policy "
                                   "networks use tanh); CNN and fusion layers are ReLU")
    cnn_channels: tuple[int, ...] = param((32, 64, 64), "conv widths of the CNN backbone", low=1, high=MAX_CHANNELS)
    cnn_features: int = param(256, "width of the CNN backbone's dense layer", low=1, high=MAX_WIDTH)
    channel_order: ChannelOrder = param("auto", "image channel axis")
    recurrent: RecurrentKind = param("none", "memory: an LSTM or GRU core between the backbone and the head, "
                                     "its hidden state carried through each episode (none: feed-forward)")
    recurrent_hidden: int = param(64, "width of the recurrent core's hidden state", low=1, high=MAX_WIDTH)

    def validate(self) -> None:
        if self.network == "cnn" and len(self.cnn_channels) != 3:
            raise ConfigError(f"cnn_channels: the CNN takes three conv widths, got {self.cnn_channels}")
        for key in ("hidden", "fusion"):  # layers between widths: refuse what cannot fit before torch tries
            widths = getattr(self, key)
            weights = sum(a * b for a, b in zip(widths, widths[1:]))
            require_memory(weights * BYTES_PER_PARAMETER, f"{key}={','.join(map(str, widths))} ({weights:,} "
                           "weights between its layers, with gradients and optimizer state)",
                           f"use narrower layers (--set {key}=…)")
        if self.recurrent != "none":  # input weights are at most as wide as the widest feature layer
            width = max(self.hidden[-1:] + self.fusion[-1:] + (self.cnn_features,))
            gates = (4 if self.recurrent == "lstm" else 3) * self.recurrent_hidden
            weights = gates * (width + self.recurrent_hidden)
            require_memory(weights * BYTES_PER_PARAMETER, f"recurrent_hidden={self.recurrent_hidden} ({weights:,} "
                           "weights, with gradients and optimizer state)", "use a narrower core (--set "
                           "recurrent_hidden=…)")


def build_backbone(config: NetworkConfig, obs_space: gym.Space) -> nn.Module:
    """The backbone `config` describes for `obs_space`, with the pretrained CNN loaded (and frozen) if given.

    Each call builds fresh weights, so networks that must not share a backbone (a policy and its critic)
    call it once each."""
    body = make_backbone(obs_space, config.network, hidden=config.hidden, cnn_channels=config.cnn_channels,
                         cnn_features=config.cnn_features, channel_order=config.channel_order,
                         fusion=config.fusion, activation=config.activation, branch_norm=config.branch_norm)
    if config.backbone is not None:
        load_pretrained_backbone(body, config.backbone, config.freeze_backbone)
    return body


def build_core(config: NetworkConfig, features_dim: int) -> RecurrentCore | None:
    """The recurrent core `config` describes (`recurrent`, `recurrent_hidden`) over `features_dim` backbone
    features, or None for a feed-forward network (`recurrent: none`). Like `build_backbone`, fresh weights
    each call."""
    if config.recurrent == "none":
        return None
    return RecurrentCore(config.recurrent, features_dim, config.recurrent_hidden)


class QHead(nn.Module):
    """Q-values from features: one linear layer, or dueling value + advantage streams."""

    def __init__(self, features_dim: int, n_actions: int, dueling: bool = False):
        super().__init__()
        self.dueling = dueling
        self.advantage = nn.Linear(features_dim, n_actions)
        self.value = nn.Linear(features_dim, 1) if dueling else None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        adv = nn.functional.linear(features, self.advantage.weight, self.advantage.bias)
        if self.value is None:
            return adv
        value = nn.functional.linear(features, self.value.weight, self.value.bias)
        # Subtracting the mean advantage makes V and A identifiable (Wang et al. 2016).
        return value + adv - adv.mean(dim=1, keepdim=True)


class Net(nn.Module):
    """Backbone followed by a head; with a recurrent `core` (`rlagents.recurrent`), backbone → core → head.

    `forward` is the feed-forward network's; a network with a core is run by `sequence` (a whole (T, B)
    sequence of observations) and `step` (one step of a batch), each from a hidden state."""

    def __init__(self, backbone: nn.Module, head: nn.Module, core: RecurrentCore | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = head
        if core is not None:  # only then: a feed-forward network's state_dict keeps its keys
            self.core = core

    def forward(self, obs: torch.Tensor | dict[str, torch.Tensor],
                features: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        if features is None:
            return self.head.forward(self.backbone.forward(obs))
        return self.head.forward(self.backbone.forward(obs, features))  # precomputed branch features (Dict)

    def sequence(self, obs: torch.Tensor | dict[str, torch.Tensor], state: State, starts: torch.Tensor | np.ndarray
                 ) -> tuple[torch.Tensor, State]:
        """Head outputs (T·B, …) of a (T, B) sequence given as T·B time-major rows, from `state`, zeroing env
        b's state before step t where `starts[t, b]`; and the state after the last step."""
        out, state = sequence_features(self.backbone, self.core, obs, state, starts)
        return self.head(out), state

    def step(self, obs: torch.Tensor | dict[str, torch.Tensor], state: State, starts: torch.Tensor | np.ndarray
             ) -> tuple[torch.Tensor, State]:
        """Head outputs (B, …) of one step of a batch, from `state` (rows zeroed first where `starts`)."""
        out, state = self.core.step(self.backbone(obs), state, starts)
        return self.head(out), state


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def orthogonal_init(module: nn.Module, gain: float = math.sqrt(2)) -> None:
    """Orthogonal weights and zero biases for linear and conv layers (a common RL initialisation)."""
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            nn.init.orthogonal_(layer.weight, gain)
            nn.init.zeros_(layer.bias)


def image_branch(backbone: nn.Module) -> "ConvBackbone":
    """The CNN of a backbone: itself, or the single CNN branch of a `DictBackbone`."""
    if isinstance(backbone, ConvBackbone):
        return backbone
    branches = [m for m in getattr(backbone, "branches", {}).values() if isinstance(m, ConvBackbone)]
    if len(branches) != 1:
        raise UnsupportedSpaceError(f"a pretrained backbone needs exactly one image (CNN) branch in the network, "
                                    f"found {len(branches)}")
    return branches[0]


def load_pretrained_backbone(backbone: nn.Module, path: str, freeze: bool) -> None:
    """Load a trained `ConvBackbone` (e.g. from `rlagents.classify`) into `backbone`'s image branch.

    `path` is a classifier run directory (holding `backbone.json`), a checkpoint JSON, or the `.safetensors`
    file beside one. Frozen weights get no gradients.
    """
    from pathlib import Path

    from rlagents.checkpoint import read_checkpoint
    from rlagents.errors import CheckpointError
    from rlagents.state_check import load_module_state

    target = image_branch(backbone)
    file = Path(path)
    if file.is_dir():
        file = file / "backbone.json"
    elif file.suffix == ".safetensors":  # the tensor half of a checkpoint: its JSON, beside it, describes it
        file = file.with_suffix(".json")
    state, _ = read_checkpoint(file)
    weights = state.get("backbone") if isinstance(state, dict) else None
    if not isinstance(weights, dict):
        raise CheckpointError(f"{file} holds no 'backbone' weights (write one with python -m rlagents.classify)")
    load_module_state(target, weights, file, "backbone", into="this network's image branch")
    if freeze:
        target.requires_grad_(False)

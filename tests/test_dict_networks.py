"""Dict observations: one backbone per key, features joined, and a classifier's backbone in the image branch."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlagents.errors import UnsupportedSpaceError
from rlagents.networks import ConvBackbone, DictBackbone, MLPBackbone, Net, QHead, make_backbone

LOCK_SPACE = gym.spaces.Dict({"image": gym.spaces.Box(0, 255, (1, 12, 12), np.uint8),
                              "dial": gym.spaces.Discrete(10)})


def batch(space: gym.spaces.Dict, n: int) -> dict[str, torch.Tensor]:
    samples = [space.sample() for _ in range(n)]
    return {k: torch.as_tensor(np.stack([s[k] for s in samples])) for k in space.spaces}


def test_make_backbone_gives_each_key_its_own_backbone():
    backbone = make_backbone(LOCK_SPACE, hidden=(32,), cnn_channels=(4, 8, 8), cnn_features=16)
    assert isinstance(backbone, DictBackbone)
    assert isinstance(backbone.branches["image"], ConvBackbone) and isinstance(backbone.branches["dial"], MLPBackbone)
    assert backbone.features_dim == 16 + 32
    assert backbone(batch(LOCK_SPACE, 5)).shape == (5, 48)


def test_vectors_and_nested_dicts():
    space = gym.spaces.Dict({"pos": gym.spaces.Box(-1, 1, (3,), np.float32),
                             "inner": gym.spaces.Dict({"mode": gym.spaces.Discrete(4)})})
    backbone = make_backbone(space, hidden=(8, 6))
    assert backbone.features_dim == 12 and isinstance(backbone.branches["inner"], DictBackbone)
    obs = {"pos": torch.zeros(2, 3), "inner": {"mode": torch.tensor([0, 3])}}
    assert backbone(obs).shape == (2, 12)


def test_features_are_the_branches_joined_in_key_order():
    backbone = make_backbone(LOCK_SPACE, hidden=(8,), cnn_channels=(2, 2, 2), cnn_features=4)
    obs = batch(LOCK_SPACE, 3)
    expected = torch.cat([backbone.branches[k](obs[k]) for k in LOCK_SPACE.spaces], dim=1)
    assert torch.equal(backbone(obs), expected)



def test_branch_norm_standardises_each_keys_features_before_they_are_joined():
    torch.manual_seed(0)
    backbone = make_backbone(LOCK_SPACE, hidden=(8,), cnn_channels=(2, 2, 2), cnn_features=4, branch_norm=True)
    obs = batch(LOCK_SPACE, 3)
    joined = backbone(obs)
    assert torch.allclose(joined.mean(dim=1), torch.zeros(3), atol=1e-5)  # no fusion layer: the parts as normed
    assert torch.allclose(joined[:, :8].std(dim=1, unbiased=False), torch.ones(3), atol=1e-2)
    with torch.no_grad():  # a branch whose features are 100 times larger weighs no more in the joined vector
        backbone.branches["image"].dense[0].weight.mul_(100.0)
        backbone.branches["image"].dense[0].bias.mul_(100.0)
    assert torch.allclose(backbone(obs), joined, atol=1e-2)
    plain = make_backbone(LOCK_SPACE, hidden=(8,), cnn_channels=(2, 2, 2), cnn_features=4)
    plain.load_state_dict(backbone.state_dict())  # the norm has no weights: checkpoints load either way
    assert not torch.allclose(plain(obs), joined, atol=1e-2)

def test_q_network_on_vectorised_digit_lock_observations():
    from rlagents.environments import make_vec_env

    vec = make_vec_env("DigitLock-v0", 4)
    obs, _ = vec.reset(seed=0)
    backbone = make_backbone(vec.single_observation_space, cnn_channels=(4, 8, 8), cnn_features=16)
    net = Net(backbone, QHead(backbone.features_dim, 3, dueling=True))
    q = net({k: torch.as_tensor(v) for k, v in obs.items()})
    assert q.shape == (4, 3) and torch.isfinite(q).all()


def test_classifier_backbone_loads_unchanged_into_the_image_branch(tmp_path):
    from rlagents.classify import load_backbone_state, main
    from rlagents.digits import sklearn_test_digits

    run_dir = tmp_path / "cls"
    assert main(["--run-dir", str(run_dir), "--set", "epochs=3", "--set", "cnn_channels=4,8,8",
                 "--set", "cnn_features=16", "--no-progress"]) == 0
    state = load_backbone_state(run_dir)
    classifier_backbone = ConvBackbone(LOCK_SPACE["image"], (4, 8, 8), 16)
    classifier_backbone.load_state_dict(state)
    torch.manual_seed(1)  # a Dict backbone with other random weights, then the classifier's in its image branch
    dict_backbone = make_backbone(LOCK_SPACE, cnn_channels=(4, 8, 8), cnn_features=16)
    images = torch.as_tensor(sklearn_test_digits(0)[0][:32].copy())
    assert not torch.equal(dict_backbone.branches["image"](images), classifier_backbone(images))
    dict_backbone.branches["image"].load_state_dict(state)  # strict: every key and shape must match
    assert torch.equal(dict_backbone.branches["image"](images), classifier_backbone(images))
    dial = torch.arange(32) % 10
    joined = dict_backbone({"image": images, "dial": dial})
    assert dict_backbone.keys == ["dial", "image"]  # Gymnasium sorts a Dict's keys: the image features come last
    assert torch.equal(joined[:, -16:], classifier_backbone(images))


@pytest.mark.parametrize("space, kind, message", [
    (gym.spaces.Dict({"bits": gym.spaces.MultiBinary(3)}), "auto", "Box or Discrete"),
    (LOCK_SPACE, "cnn", "use backbone auto"),
    (gym.spaces.Dict({}), "auto", "non-empty Dict"),
])
def test_unsupported_dict_spaces(space, kind, message):
    with pytest.raises(UnsupportedSpaceError, match=message):
        make_backbone(space, kind)

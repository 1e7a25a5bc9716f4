"""Network shapes: MLP and CNN backbones, uint8 images in both channel orders, heads, backbone transfer."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlagents.errors import UnsupportedSpaceError
from rlagents.networks import ConvBackbone, MLPBackbone, Net, QHead, image_layout, make_backbone


def test_mlp_backbone_on_vectors_and_discrete_states():
    box = gym.spaces.Box(-1, 1, (4,), np.float32)
    mlp = make_backbone(box, hidden=(32, 16))
    assert isinstance(mlp, MLPBackbone) and mlp.features_dim == 16
    assert mlp(torch.zeros(5, 4)).shape == (5, 16)
    onehot = make_backbone(gym.spaces.Discrete(16), hidden=(8,))
    out = onehot(torch.tensor([0, 3, 15]))
    assert out.shape == (3, 8)


@pytest.mark.parametrize("shape, expected", [((3, 84, 84), ((3, 84, 84), False)), ((84, 84, 3), ((3, 84, 84), True)),
                                             ((4, 84, 84), ((4, 84, 84), False)), ((8, 8), ((1, 8, 8), False)),
                                             ((1, 8, 8), ((1, 8, 8), False)), ((8, 8, 1), ((1, 8, 8), True))])
def test_channel_order_detection(shape, expected):
    assert image_layout(shape) == expected


def test_ambiguous_channel_order_is_refused_not_guessed():
    with pytest.raises(UnsupportedSpaceError, match="channel axis"):
        image_layout((3, 10, 3))
    assert image_layout((3, 10, 3), "first") == ((3, 10, 3), False)


@pytest.mark.parametrize("shape", [(3, 32, 32), (32, 32, 3), (1, 8, 8), (84, 84, 4), (84, 84)])
def test_cnn_on_uint8_images(shape):
    space = gym.spaces.Box(0, 255, shape, np.uint8)
    cnn = make_backbone(space, cnn_channels=(4, 8, 8), cnn_features=32)
    assert isinstance(cnn, ConvBackbone)
    x = torch.randint(0, 256, (2, *shape), dtype=torch.uint8)
    assert cnn(x).shape == (2, 32)


def test_channel_last_and_channel_first_give_identical_features():
    first = ConvBackbone(gym.spaces.Box(0, 255, (3, 16, 16), np.uint8), (4, 8, 8), 16)
    last = ConvBackbone(gym.spaces.Box(0, 255, (16, 16, 3), np.uint8), (4, 8, 8), 16)
    last.load_state_dict(first.state_dict())  # same weights: only the input layout differs
    img = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    assert torch.allclose(first(img), last(img.permute(0, 2, 3, 1)))


def test_uint8_pixels_are_scaled_inside_the_network():
    cnn = ConvBackbone(gym.spaces.Box(0, 255, (1, 8, 8), np.uint8), (2, 2, 2), 4)
    as_float = ConvBackbone(gym.spaces.Box(0.0, 1.0, (1, 8, 8), np.float32), (2, 2, 2), 4)
    as_float.load_state_dict(cnn.state_dict())
    img = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    assert torch.allclose(cnn(img), as_float(img.float() / 255.0), atol=1e-6)


def test_cnn_shape_is_conv_pool_conv_pool_conv_then_dense():
    cnn = ConvBackbone(gym.spaces.Box(0, 255, (1, 8, 8), np.uint8), (4, 8, 16), 32)
    kinds = [type(m).__name__ for m in cnn.convs]
    assert [k for k in kinds if k in ("Conv2d", "MaxPool2d")] == ["Conv2d", "MaxPool2d", "Conv2d", "MaxPool2d", "Conv2d"]
    assert cnn.dense[0].out_features == 32


def test_q_heads_plain_and_dueling():
    feats = torch.randn(5, 16)
    assert QHead(16, 3)(feats).shape == (5, 3)
    dueling = QHead(16, 3, dueling=True)
    q = dueling(feats)
    adv = dueling.advantage(feats)
    value = dueling.value(feats)
    assert torch.allclose(q, value + adv - adv.mean(1, keepdim=True))


def test_trained_backbone_loads_unchanged_into_a_q_network():
    space = gym.spaces.Box(0, 255, (1, 8, 8), np.uint8)
    classifier = Net(make_backbone(space, cnn_channels=(4, 8, 8), cnn_features=16), torch.nn.Linear(16, 10))
    q_net = Net(make_backbone(space, cnn_channels=(4, 8, 8), cnn_features=16), QHead(16, 3))
    q_net.backbone.load_state_dict(classifier.backbone.state_dict())
    x = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)
    assert torch.equal(q_net.backbone(x), classifier.backbone(x))


def test_unsupported_observation_space():
    with pytest.raises(UnsupportedSpaceError, match="Box or Discrete"):
        MLPBackbone(gym.spaces.MultiBinary(3))


@pytest.mark.parametrize("space, dueling, hidden", [
    (gym.spaces.Box(-3, 3, (4,), np.float32), False, (32, 32)),
    (gym.spaces.Box(-3, 3, (2, 3), np.float64), True, (16,)),
    (gym.spaces.Discrete(7), False, (8, 8)),
    (gym.spaces.Discrete(5), True, ()),
])
def test_numpy_greedy_scores_pick_the_same_actions_as_torch(space, dueling, hidden):
    from rlagents.numpy_mlp import numpy_greedy_scores

    torch.manual_seed(0)
    backbone = make_backbone(space, hidden=hidden)
    net = Net(backbone, QHead(backbone.features_dim, 4, dueling))
    scores = numpy_greedy_scores(net)
    obs = np.stack([space.sample() for _ in range(500)])
    with torch.no_grad():
        expected = net(torch.as_tensor(obs)).argmax(1).numpy()
    assert np.array_equal(scores(obs).argmax(1), expected)
    with torch.no_grad():  # views of the parameters: in-place updates are seen without rebuilding
        for p in net.parameters():
            p.add_(torch.randn_like(p))
        expected = net(torch.as_tensor(obs)).argmax(1).numpy()
    assert np.array_equal(scores(obs).argmax(1), expected)


def test_numpy_greedy_scores_do_not_apply_to_cnns():
    from rlagents.numpy_mlp import numpy_greedy_scores

    cnn = make_backbone(gym.spaces.Box(0, 255, (1, 8, 8), np.uint8), cnn_channels=(2, 2, 2), cnn_features=4)
    assert numpy_greedy_scores(Net(cnn, QHead(4, 2))) is None


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_numpy_q_functions_refuse_a_recurrent_q_network(kind):
    """The core's width equals the backbone's, so skipping the core would fit and silently give wrong Q-values:
    both functions must refuse rather than return a feed-forward computation."""
    from rlagents.agents.dqn import DQNAgent, DQNConfig
    from rlagents.numpy_mlp import numpy_greedy_scores, numpy_q_network

    box, actions = gym.spaces.Box(-1, 1, (3,), np.float32), gym.spaces.Discrete(2)
    config = DQNConfig(recurrent=kind, recurrent_hidden=16, hidden=(16,), batch_size=4, buffer_size=400)
    agent = DQNAgent(config, box, actions, n_envs=1, total_steps=100, device=torch.device("cpu"), seed=0)
    for function in (numpy_greedy_scores, numpy_q_network):
        with pytest.raises(ValueError, match=f"{function.__name__} computes feed-forward Q-networks only: this one "
                                             f"has a recurrent core"):
            function(agent.q)
    plain = DQNAgent(DQNConfig(hidden=(16,)), box, actions, n_envs=1, total_steps=100,
                     device=torch.device("cpu"), seed=0)
    assert numpy_greedy_scores(plain.q) is not None and numpy_q_network(plain.q) is not None

"""REINFORCE on Dict observations (DigitLock): per-key backbones, and a classifier-trained CNN loaded into the
image branch of the policy and value networks, frozen or fine-tuned."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import SMALL_CNN

from rlagents.agents.reinforce import ReinforceAgent, ReinforceConfig
from rlagents.checkpoint import read_checkpoint
from rlagents.environments import make_vec_env
from rlagents.networks import DictBackbone
from rlagents.train import main as train_main


def reinforce_on_digitlock(run_dir: Path, *extra: str, steps: int = 600) -> dict:
    assert train_main(["--agent", "reinforce", "--env", "DigitLock-v0", "--steps", str(steps), "--eval-every", "0",
                       "--eval-episodes", "4", "--run-dir", str(run_dir), "--no-progress",
                       "--set", "episodes_per_update=4", *SMALL_CNN, *extra]) == 0
    return read_checkpoint(run_dir / "checkpoints" / "final.json")[0]["agent"]


def test_policy_and_value_networks_take_dict_batches():
    envs = make_vec_env("DigitLock-v0", 3)
    config = ReinforceConfig(cnn_channels=(4, 8, 8), cnn_features=16, fusion=(32,))
    agent = ReinforceAgent(config, envs.single_observation_space, envs.single_action_space, n_envs=3,
                           total_steps=100, device=torch.device("cpu"), seed=0)
    assert isinstance(agent.policy.backbone, DictBackbone) and isinstance(agent.value[0], DictBackbone)
    obs, _ = envs.reset(seed=0)
    tensors = {k: torch.as_tensor(v) for k, v in obs.items()}
    assert agent.policy(tensors).shape == (3, 3)  # three actions
    assert agent.value(tensors).shape == (3, 1)
    updates = 0
    for _ in range(200):  # a few updates from whole episodes of Dict observations
        actions = agent.act(obs, explore=True)
        assert actions.shape == (3,) and set(actions) <= {0, 1, 2}
        next_obs, rewards, terminated, truncated, _ = envs.step(actions)
        agent.observe(obs, actions, rewards, next_obs, terminated, truncated)
        obs, updates = next_obs, agent.updates
    assert updates > 0
    envs.close()


def test_reinforce_trains_on_digitlock_through_the_cli(tmp_path: Path):
    state = reinforce_on_digitlock(tmp_path / "run")
    assert any(k.startswith("backbone.branches.image.") for k in state["policy"])
    assert any(k.startswith("0.branches.dial.") for k in state["value"])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["total_steps"] == 600 and np.isfinite(summary["eval_return_mean"])


@pytest.mark.parametrize("freeze", [True, False])
def test_pretrained_backbone_loads_into_policy_and_value(classifier_run: Path, tmp_path: Path, freeze: bool):
    pretrained = read_checkpoint(classifier_run / "backbone.json")[0]["backbone"]
    state = reinforce_on_digitlock(tmp_path / "run", "--set", f"backbone={classifier_run}",
                                   "--set", f"freeze_backbone={str(freeze).lower()}")
    assert state["counters"]["updates"] > 10
    for net, prefix in (("policy", "backbone.branches.image."), ("value", "0.branches.image.")):
        image = {k.removeprefix(prefix): v for k, v in state[net].items() if k.startswith(prefix)}
        assert set(image) == set(pretrained)
        same = all(torch.equal(image[k], pretrained[k]) for k in pretrained)
        assert same == freeze, net  # frozen: untouched by training; fine-tuned: moved


def test_reinforce_refuses_unsupported_dict_parts():
    from rlagents.errors import UnsupportedSpaceError

    space = gym.spaces.Dict({"a": gym.spaces.MultiBinary(3)})
    with pytest.raises(UnsupportedSpaceError, match="or a Dict of them"):
        ReinforceAgent.check_spaces(space, gym.spaces.Discrete(2), ReinforceConfig())

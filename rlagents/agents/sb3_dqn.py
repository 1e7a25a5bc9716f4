"""`sb3-dqn`: Stable-Baselines3's DQN, trained by SB3's own `learn()`, as a reference for our `dqn`.

Defaults are SB3's; `configs/sb3-dqn.yaml` holds RL Zoo's tuned hyperparameters per env.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rlagents.agents._sb3 import SB3Agent, SB3Config, schedule
from rlagents.config import param


@dataclass
class SB3DQNConfig(SB3Config):
    """SB3 DQN's hyperparameters (SB3 names, with `lr` for `learning_rate`)."""

    buffer_size: int = param(1_000_000, "replay capacity in transitions", low=1)
    learning_starts: int = param(100, "env steps before the first update", low=0)
    batch_size: int = param(32, "transitions per gradient step", low=1)
    tau: float = param(1.0, "target update rate (1 = hard copy)", low=0.0, high=1.0, low_open=True)
    train_freq: int = param(4, "env steps (per env) between training rounds", low=1)
    gradient_steps: int = param(1, "gradient steps per round (-1: as many as env steps collected)", low=-1)
    target_update_interval: int = param(10_000, "env steps between target network updates", low=1)
    exploration_fraction: float = param(0.1, "fraction of training over which epsilon decays", low=0.0, high=1.0)
    exploration_initial_eps: float = param(1.0, "initial exploration rate", low=0.0, high=1.0)
    exploration_final_eps: float = param(0.05, "final exploration rate", low=0.0, high=1.0)


class SB3DQNAgent(SB3Agent):
    """Stable-Baselines3 DQN behind our Agent interface (discrete actions)."""

    name = "sb3-dqn"
    config_class = SB3DQNConfig
    discrete_only = True

    def algorithm(self):
        from stable_baselines3 import DQN

        return DQN

    def algorithm_kwargs(self) -> dict[str, Any]:
        c = self.config
        return {"learning_rate": schedule(c.lr, c.lr_schedule), "buffer_size": c.buffer_size,
                "learning_starts": c.learning_starts, "batch_size": c.batch_size, "tau": c.tau, "gamma": c.gamma,
                "train_freq": c.train_freq, "gradient_steps": c.gradient_steps,
                "target_update_interval": c.target_update_interval,
                "exploration_fraction": c.exploration_fraction, "exploration_initial_eps": c.exploration_initial_eps,
                "exploration_final_eps": c.exploration_final_eps, "max_grad_norm": c.max_grad_norm,
                "policy_kwargs": {"net_arch": list(c.net_arch)}}


AGENT = SB3DQNAgent

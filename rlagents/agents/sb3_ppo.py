"""`sb3-ppo`: Stable-Baselines3's PPO, trained by SB3's own `learn()`, as a reference agent.

Defaults are SB3's; `configs/sb3-ppo.yaml` holds RL Zoo's tuned hyperparameters per env.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from rlagents.agents._sb3 import SB3Agent, SB3Config, schedule
from rlagents.config import param


@dataclass
class SB3PPOConfig(SB3Config):
    """SB3 PPO's hyperparameters (SB3 names, with `lr` for `learning_rate`)."""

    lr: float = param(3.0e-4, "learning rate", low=0.0, low_open=True)
    max_grad_norm: float = param(0.5, "gradient norm clip", low=0.0, low_open=True)
    n_steps: int = param(2048, "env steps per env and rollout", low=1)
    batch_size: int = param(64, "minibatch size", low=1)
    n_epochs: int = param(10, "epochs over each rollout", low=1)
    gae_lambda: float = param(0.95, "GAE lambda", low=0.0, high=1.0)
    clip_range: float = param(0.2, "PPO clip range", low=0.0, low_open=True)
    clip_range_schedule: Literal["constant", "linear"] = param("constant", "clip range: constant, or linear to 0")
    ent_coef: float = param(0.0, "entropy bonus", low=0.0)
    vf_coef: float = param(0.5, "value loss weight", low=0.0)
    normalize_advantage: bool = param(True, "normalize advantages per minibatch")
    use_sde: bool = param(False, "generalized state-dependent exploration (Box actions)")
    sde_sample_freq: int = param(-1, "gSDE noise resample period in steps (-1: per rollout)", low=-1)
    log_std_init: float = param(0.0, "initial log std of Gaussian actions")
    ortho_init: bool = param(True, "orthogonal initialisation")


class SB3PPOAgent(SB3Agent):
    """Stable-Baselines3 PPO behind our Agent interface (discrete or continuous actions)."""

    name = "sb3-ppo"
    config_class = SB3PPOConfig

    def algorithm(self):
        from stable_baselines3 import PPO

        return PPO

    def algorithm_kwargs(self) -> dict[str, Any]:
        c = self.config
        return {"learning_rate": schedule(c.lr, c.lr_schedule), "n_steps": c.n_steps, "batch_size": c.batch_size,
                "n_epochs": c.n_epochs, "gamma": c.gamma, "gae_lambda": c.gae_lambda,
                "clip_range": schedule(c.clip_range, c.clip_range_schedule), "ent_coef": c.ent_coef,
                "vf_coef": c.vf_coef, "max_grad_norm": c.max_grad_norm,
                "normalize_advantage": c.normalize_advantage, "use_sde": c.use_sde,
                "sde_sample_freq": c.sde_sample_freq,
                "policy_kwargs": {"net_arch": list(c.net_arch), "log_std_init": c.log_std_init,
                                  "ortho_init": c.ortho_init}}


AGENT = SB3PPOAgent

"""`sb3-a2c`: Stable-Baselines3's A2C, trained by SB3's own `learn()`, as a reference agent.

Defaults are SB3's; `configs/sb3-a2c.yaml` holds RL Zoo's tuned hyperparameters per env.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rlagents.agents._sb3 import SB3Agent, SB3Config, schedule
from rlagents.config import param


@dataclass
class SB3A2CConfig(SB3Config):
    """SB3 A2C's hyperparameters (SB3 names, with `lr` for `learning_rate`)."""

    lr: float = param(7.0e-4, "learning rate", low=0.0, low_open=True)
    max_grad_norm: float = param(0.5, "gradient norm clip", low=0.0, low_open=True)
    n_steps: int = param(5, "env steps per env and update", low=1)
    gae_lambda: float = param(1.0, "GAE lambda", low=0.0, high=1.0)
    ent_coef: float = param(0.0, "entropy bonus", low=0.0)
    vf_coef: float = param(0.5, "value loss weight", low=0.0)
    use_rms_prop: bool = param(True, "RMSprop (true) or Adam")
    rms_prop_eps: float = param(1.0e-5, "RMSprop epsilon", low=0.0, low_open=True)
    normalize_advantage: bool = param(False, "normalize advantages")
    use_sde: bool = param(False, "generalized state-dependent exploration (Box actions)")
    sde_sample_freq: int = param(-1, "gSDE noise resample period in steps (-1: per rollout)", low=-1)
    log_std_init: float = param(0.0, "initial log std of Gaussian actions")
    ortho_init: bool = param(True, "orthogonal initialisation")


class SB3A2CAgent(SB3Agent):
    """Stable-Baselines3 A2C behind our Agent interface (discrete or continuous actions)."""

    name = "sb3-a2c"
    config_class = SB3A2CConfig

    def algorithm(self):
        from stable_baselines3 import A2C

        return A2C

    def algorithm_kwargs(self) -> dict[str, Any]:
        c = self.config
        return {"learning_rate": schedule(c.lr, c.lr_schedule), "n_steps": c.n_steps, "gamma": c.gamma,
                "gae_lambda": c.gae_lambda, "ent_coef": c.ent_coef, "vf_coef": c.vf_coef,
                "max_grad_norm": c.max_grad_norm, "use_rms_prop": c.use_rms_prop, "rms_prop_eps": c.rms_prop_eps,
                "normalize_advantage": c.normalize_advantage, "use_sde": c.use_sde,
                "sde_sample_freq": c.sde_sample_freq,
                "policy_kwargs": {"net_arch": list(c.net_arch), "log_std_init": c.log_std_init,
                                  "ortho_init": c.ortho_init}}


AGENT = SB3A2CAgent

"""Pieces shared by the command-line entry points."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

import torch

from rlagents.errors import EXIT_USER_ERROR, UserError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports bad arguments on one line (no usage dump), with exit code 2."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR)


def resolve_device(name: str) -> torch.device:
    """`auto` → cuda when available, else cpu; refuses cuda on a machine without it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here; valid choices: auto, cpu")
    return torch.device(name)


def default_config_path(agent: str) -> Path:
    """`configs/<agent>.yaml` in the working directory if present, else the one shipped with rlagents."""
    local = Path("configs") / f"{agent}.yaml"
    return local if local.is_file() else CONFIG_DIR / f"{agent}.yaml"

"""Pieces shared by the command-line entry points."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import torch

from rlagents.errors import EXIT_USER_ERROR, UserError
from rlagents.paths import check_output_dir, check_output_file
from rlagents.safeload import MAX_NUMBER_CHARS, shown
from rlagents.validate import check_count, check_seed

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


# argparse `type=` functions: a UserError raised here passes through argparse (which catches only
# ValueError/TypeError/ArgumentTypeError) to `cli_entry`, which prints it as the one-line error it is.


def _integer(text: str, what: str, expected: str) -> int:
    try:
        if len(text) > MAX_NUMBER_CHARS:
            raise ValueError
        return int(text)
    except ValueError:
        raise UserError(f"{what} must be {expected}, got {shown(text)}") from None


def seed_arg(what: str = "--seed") -> Callable[[str], int]:
    """argparse type of a seed option: an integer from 0 to 2**32 - 1 (`validate.check_seed`)."""

    def parse(text: str) -> int:
        return check_seed(_integer(text, what, "an integer from 0 to 4,294,967,295 (2**32 - 1)"), what)

    return parse


def count_arg(what: str, high: int, low: int = 1) -> Callable[[str], int]:
    """argparse type of a count option (episodes, seeds, workers): an integer in [low, high]."""

    def parse(text: str) -> int:
        return check_count(_integer(text, what, f"an integer from {low:,} to {high:,}"), what, low=low, high=high)

    return parse


def output_dir_arg(what: str) -> Callable[[str], Path]:
    """argparse type of an output folder (`paths.check_output_dir`); `""` is refused, not read as `.`."""
    return lambda text: check_output_dir(text, what)


def output_file_arg(what: str) -> Callable[[str], Path]:
    """argparse type of an output file (`paths.check_output_file`)."""
    return lambda text: check_output_file(text, what)

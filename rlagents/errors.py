"""User-facing errors: bad input ends a command with one line and exit code 2, never a traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable
from typing import TypeVar

EXIT_USER_ERROR = 2
MAX_MESSAGE_CHARS = 1_000  # a last bound on what one error line echoes (the messages bound their values too)


class UserError(Exception):
    """Bad input from the user (CLI option, config, env, checkpoint). Printed as one line; exit code 2."""


class ConfigError(UserError):
    """A config file or `--set` override is missing, malformed, or has an unknown key or bad value."""


class CheckpointError(UserError):
    """A checkpoint is missing, corrupt, or belongs to another agent, env or format version."""


class UnsupportedSpaceError(UserError):
    """An agent cannot handle the observation or action space of an environment."""


class ExportError(UserError):
    """A policy cannot be exported (`rlagents.export`): the agent has no greedy graph, or the graph would not
    act as the agent does."""


EXIT_TRAINING_FAULT = 3


class TrainingFault(Exception):
    """Training cannot go on (a NaN or infinite loss, say); the last good checkpoint is left intact."""


def choices(values: Iterable[object], limit: int = 12) -> str:
    """Format valid choices for an error message, eliding long lists."""
    items = [str(v) for v in values]
    shown = ", ".join(items[:limit])
    return shown + (f", … ({len(items) - limit} more)" if len(items) > limit else "")


def one_line(exc: BaseException) -> str:
    """An exception's text on one line, at most MAX_MESSAGE_CHARS long, whatever the text held."""
    text = str(exc)[: 4 * MAX_MESSAGE_CHARS]
    message = " ".join(text.split())
    return message if len(message) <= MAX_MESSAGE_CHARS else message[: MAX_MESSAGE_CHARS - 1] + "…"


F = TypeVar("F", bound=Callable[..., int | None])


def cli_entry(main: F) -> F:
    """Wrap a CLI `main` so that a `UserError` prints `error: …` on one line and exits with code 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as exc:
            print(f"error: {one_line(exc)}", file=sys.stderr)
            raise SystemExit(EXIT_USER_ERROR) from None
        except TrainingFault as exc:
            print(f"error: training stopped: {one_line(exc)}", file=sys.stderr)
            raise SystemExit(EXIT_TRAINING_FAULT) from None

    return wrapper  # type: ignore[return-value]

"""Numbers the OS or a library would reject, checked up front so that bad input ends in one line (exit 2).

NumPy and Gymnasium take seeds from 0 to 2**32 - 1 (NumPy's legacy seeding raises a ValueError past it),
counts must stay below what would run for centuries, and arrays allocated up front (replay buffers) must fit
in the memory that is available now: NumPy's lazily committed zeros would otherwise "succeed" and the kernel
would kill the process hours later, when the buffer fills.
"""

from __future__ import annotations

import os

from rlagents.errors import ConfigError, UserError
from rlagents.safeload import shown

SEED_MAX = 2**32 - 1


def check_seed(value: object, what: str = "--seed") -> int:
    """`value` as a seed in 0 … 2**32 - 1, or a UserError naming `what` (a flag or config key)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= SEED_MAX:
        raise UserError(f"{what} must be an integer from 0 to {SEED_MAX:,} (2**32 - 1), got {shown(value)}")
    return value


def check_count(value: object, what: str, *, low: int = 1, high: int) -> int:
    """`value` as an integer in [low, high] (episodes, seeds to run, …), or a UserError naming `what`."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UserError(f"{what} must be an integer from {low:,} to {high:,}, got {shown(value)}")
    return value


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation now (Linux `MemAvailable`, else physical memory), or None
    where neither can be read."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def format_bytes(n: float) -> str:
    """1536 → '1.5 KB' (powers of 1,000, as memory is sold)."""
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def require_memory(nbytes: int, what: str, hint: str) -> None:
    """Refuse (ConfigError) to allocate `nbytes` for `what` when more than the available memory; `hint` says
    which setting lowers it."""
    available = available_memory()
    if available is not None and nbytes > available:
        raise ConfigError(f"{what} needs {format_bytes(nbytes)} of memory, but only {format_bytes(available)} "
                          f"is available: {hint}")


MAX_SEED_LIST = 10_000  # seeds in one list: far more runs than any comparison or study makes


def parse_seeds(text: str, what: str = "--seeds") -> list[int]:
    """Seeds from `N` (0 … N-1), `A-B` (A … B inclusive) or `A,B,C`; a UserError naming `what` otherwise.

    An explicit list lets a comparison run on seeds that a config was not chosen on."""
    raw = str(text).strip()
    valid = f"{what} takes N (seeds 0..N-1), A-B (a range) or A,B,C (a list), got {shown(raw)}"
    try:
        if "," in raw:
            seeds = [int(part) for part in raw.split(",") if part.strip()]
        elif "-" in raw.lstrip("-"):
            low, _, high = raw.partition("-")
            if int(high) < int(low):
                raise UserError(f"{what} {raw}: the range is inverted ({low} > {high})")
            seeds = list(range(int(low), int(high) + 1)) if int(high) - int(low) < MAX_SEED_LIST else []
        else:
            count = int(raw)
            if count < 1:  # `--seeds 0` is no seeds, not seed 0: say how to write what was likely meant
                raise UserError(f"{what} {count}: a count of seeds must be at least 1 ({what} 5 runs seeds 0-4); "
                                f"for seed 0 alone write {what} 0-0, for a list {what} 3,7")
            seeds = list(range(count)) if count <= MAX_SEED_LIST else []
    except ValueError:
        raise UserError(valid) from None
    if not seeds or len(seeds) > MAX_SEED_LIST:
        raise UserError(f"{what} must name 1 to {MAX_SEED_LIST:,} seeds, got {shown(raw)}")
    for seed in seeds:
        check_seed(seed, what)
    if len(set(seeds)) != len(seeds):
        raise UserError(f"{what} lists a seed twice: {shown(raw)}")
    return seeds

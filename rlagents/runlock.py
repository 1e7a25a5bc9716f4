"""One process at a time in a run directory: an OS file lock on `RUN_DIR/.lock`.

Training, resuming and anything else that writes into a run directory hold `run_lock(run_dir)` while they
write; a second process gets a one-line error (exit 2) instead of interleaving its checkpoints with the
first's. The lock is `flock(2)` on an open file, so the kernel releases it when the holder exits, however it
exits (SIGKILL included): a stale `.lock` file never blocks anyone. The file holds the holder's pid, for the
message only; it is left in place, since deleting it while another process opens it would let two processes
lock two different files.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rlagents.errors import UserError

LOCK_NAME = ".lock"

try:
    import fcntl
except ImportError:  # Windows: no flock; runs there are not locked
    fcntl = None  # type: ignore[assignment]


class RunDirBusy(UserError):
    """Another process holds the run directory's lock."""


@contextmanager
def run_lock(run_dir: Path | str) -> Iterator[Path]:
    """Hold the lock of `run_dir` (created if missing) for the `with` block; RunDirBusy if another process
    holds it. Where the filesystem has no locks (some network filesystems), warn and go on unlocked."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        _acquire(fd, run_dir)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        os.close(fd)  # releases the lock


def _acquire(fd: int, run_dir: Path) -> None:
    if fcntl is None:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        raise RunDirBusy(f"run directory {run_dir} is in use by another process{holder}; wait for it to end, "
                         f"or choose another --run-dir") from None
    except OSError as exc:
        if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise
        print(f"warning: {run_dir}'s filesystem does not support file locks; nothing stops a second process "
              f"from writing into this run", file=sys.stderr)


def _holder(fd: int) -> str:
    """' (pid N)' from the lock file, or '' when it holds no pid yet."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return f" (pid {text})" if text.isdigit() else ""


def is_empty_run_dir(run_dir: Path) -> bool:
    """True when `run_dir` is missing or holds nothing but its lock file."""
    return not run_dir.exists() or all(p.name == LOCK_NAME for p in run_dir.iterdir())

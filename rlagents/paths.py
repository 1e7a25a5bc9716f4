"""Output paths checked before anything is written: `--run-dir`, `--out` (folders) and `--video` (a file).

Each check names the path and the problem in one line: an empty path, a NUL byte, a name or path longer than
the OS allows, a file where a folder is wanted (or a folder where a file is), something in the way under a
file, a dangling symbolic link, a device or other special file, a folder that is not writable, a read-only
filesystem, a full disk. Nothing is created: the nearest existing ancestor of a path that does not exist
yet is what must be a writable folder.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from rlagents.errors import UserError
from rlagents.safeload import clip

MIN_FREE_BYTES = 1 << 20  # less than this is a full disk for a run's config, events and checkpoints


class PathError(UserError):
    """An output path that cannot be written."""


def check_output_dir(path: str | os.PathLike[str], what: str = "--run-dir") -> Path:
    """`path` as a folder that exists and is writable, or can be created; else a PathError naming `what`."""
    return _check(path, what, want_dir=True)


def check_output_file(path: str | os.PathLike[str], what: str = "--video") -> Path:
    """`path` as a file that can be created or replaced (a temp file beside it, then a rename)."""
    return _check(path, what, want_dir=False)


def _check(path: str | os.PathLike[str], what: str, *, want_dir: bool) -> Path:
    raw = os.fspath(path)
    label = f"{what} {clip(raw, 120)!r}"
    if raw == "":
        raise PathError(f"{what}: the path is empty")
    if "\0" in raw:
        raise PathError(f"{label}: the path contains a NUL byte")
    target = Path(raw)
    _check_lengths(target, label)
    ancestor = _existing_ancestor(target, label)
    info = _lstat(target, label)
    if info is not None and stat.S_ISLNK(info.st_mode):
        followed = _stat(target, label)
        if followed is None:
            raise PathError(f"{label} is a dangling symbolic link (to {clip(os.readlink(target), 120)!r})")
        info = followed
    if info is not None:
        _check_kind(info, label, want_dir)
    folder = target if (info is not None and want_dir) else ancestor
    _check_writable(folder, label)
    return target


def _lstat(path: Path, label: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return None  # a file in the way: `_existing_ancestor` names it
    except OSError as exc:
        raise PathError(f"{label}: {_reason(exc)}") from None


def _stat(path: Path, label: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise PathError(f"{label}: {_reason(exc)}") from None


def _existing_ancestor(target: Path, label: str) -> Path:
    """The nearest ancestor of `target` that exists; it must be a folder (not a file, not a dangling link)."""
    for parent in target.parents:
        info = _lstat(parent, label)
        if info is None:
            continue
        if stat.S_ISLNK(info.st_mode):
            followed = _stat(parent, label)
            if followed is None:
                raise PathError(f"{label}: {parent} is a dangling symbolic link")
            info = followed
        if not stat.S_ISDIR(info.st_mode):
            raise PathError(f"{label}: {parent} is a file, not a folder, so nothing can be created under it")
        return parent
    return Path(".")  # unreachable for real paths: `.` or `/` always exists


def _check_lengths(target: Path, label: str) -> None:
    name_max = _pathconf(Path("."), "PC_NAME_MAX", 255)
    path_max = _pathconf(Path("."), "PC_PATH_MAX", 4096)
    full = len(os.fsencode(target))
    if full >= path_max:
        raise PathError(f"{label}: the path is {full:,} bytes long; the OS allows {path_max - 1:,}")
    for part in target.parts:
        size = len(os.fsencode(part))
        if size > name_max:
            raise PathError(f"{label}: the name {clip(part, 40)!r} is {size} bytes long; the filesystem allows "
                            f"{name_max}")


def _pathconf(path: Path, name: str, default: int) -> int:
    try:
        return int(os.pathconf(path, name))
    except (OSError, ValueError, AttributeError):
        return default


def _check_kind(info: os.stat_result, label: str, want_dir: bool) -> None:
    mode = info.st_mode
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        raise PathError(f"{label} is a device, not a {'folder' if want_dir else 'file'}")
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        raise PathError(f"{label} is a {'FIFO' if stat.S_ISFIFO(mode) else 'socket'}, not a "
                        f"{'folder' if want_dir else 'file'}")
    if want_dir and not stat.S_ISDIR(mode):
        raise PathError(f"{label} is a file, not a folder")
    if not want_dir and stat.S_ISDIR(mode):
        raise PathError(f"{label} is a folder, not a file")


def _check_writable(folder: Path, label: str) -> None:
    try:
        fs = os.statvfs(folder)
    except OSError as exc:
        raise PathError(f"{label}: {_reason(exc)}") from None
    if fs.f_flag & os.ST_RDONLY:
        raise PathError(f"{label}: {folder} is on a read-only filesystem")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PathError(f"{label}: {folder} is not writable (permission denied)")
    free = fs.f_bavail * fs.f_frsize
    if free < MIN_FREE_BYTES:
        raise PathError(f"{label}: the disk holding {folder} is full ({free:,} bytes free)")


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ENAMETOOLONG:
        return "the path is longer than the OS allows"
    if exc.errno == errno.ELOOP:
        return "it loops through symbolic links"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return exc.strerror or str(exc)

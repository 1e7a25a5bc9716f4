"""Output paths that cannot be written: one line naming the path and the problem, exit 2, nothing created."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rlagents import paths
from rlagents.classify import main as classify_main
from rlagents.paths import PathError, check_output_dir, check_output_file

ROOT = os.geteuid() == 0


@pytest.fixture
def place(tmp_path: Path) -> Path:
    """A folder holding a file, a dangling symlink, a FIFO and an empty sub-folder."""
    (tmp_path / "file").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "link_to_dir").symlink_to(tmp_path)
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "empty").mkdir()
    return tmp_path


@pytest.mark.parametrize("rel, message", [
    ("file", "is a file, not a folder"),
    ("file/run", "file is a file, not a folder, so nothing can be created under it"),
    ("file/a/b/c", "file is a file, not a folder, so nothing can be created under it"),
    ("dangling", "is a dangling symbolic link (to '"),
    ("dangling/run", "dangling is a dangling symbolic link"),
    ("fifo", "is a FIFO, not a folder"),
    ("a" * 300, "is 300 bytes long; the filesystem allows 255"),
    ("x/" * 2100, "the path is 4,2"),
])
def test_bad_run_dirs_are_named_with_their_problem(place: Path, rel: str, message: str):
    with pytest.raises(PathError) as exc:
        check_output_dir(place / rel, "--run-dir")
    assert message in str(exc.value) and str(exc.value).startswith("--run-dir '")


@pytest.mark.parametrize("raw, message", [("", "--run-dir: the path is empty"),
                                          ("a\0b", "the path contains a NUL byte"),
                                          ("/dev/null", "'/dev/null' is a device, not a folder")])
def test_empty_nul_and_device_paths(raw: str, message: str):
    with pytest.raises(PathError, match=message.replace("(", r"\(")):
        check_output_dir(raw)


def test_good_paths_pass_and_nothing_is_created(place: Path):
    assert check_output_dir(place / "empty") == place / "empty"
    assert check_output_dir(place / "new" / "deeper" / "run") == place / "new" / "deeper" / "run"
    assert check_output_dir(place / "link_to_dir" / "run") == place / "link_to_dir" / "run"
    assert check_output_file(place / "episode.gif", "--video") == place / "episode.gif"
    assert check_output_file(place / "file", "--video") == place / "file"  # replaced atomically
    assert not (place / "new").exists()


@pytest.mark.parametrize("rel, message", [("empty", "is a folder, not a file"), ("fifo", "is a FIFO, not a file"),
                                          ("file/x.gif", "file is a file, not a folder"),
                                          ("dangling", "is a dangling symbolic link")])
def test_bad_output_files(place: Path, rel: str, message: str):
    with pytest.raises(PathError, match=message):
        check_output_file(place / rel, "--video")
    with pytest.raises(PathError, match="'/dev/null' is a device, not a file"):
        check_output_file("/dev/null", "--video")


@pytest.mark.skipif(ROOT, reason="root may write into any folder whatever its mode")
def test_an_unwritable_folder_is_refused(tmp_path: Path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(PathError, match="locked is not writable \\(permission denied\\)"):
            check_output_dir(locked / "run")
        with pytest.raises(PathError, match="is not writable"):
            check_output_file(locked / "x.gif", "--video")
    finally:
        locked.chmod(0o700)


def test_an_unwritable_folder_is_refused_even_for_root():
    # /proc/1 refuses new entries to everyone, root included, whatever os.access says for other folders
    with pytest.raises(PathError, match="/proc/1 is not writable"):
        check_output_dir("/proc/1/run")


class FakeStatvfs:
    def __init__(self, flag: int = 0, free_blocks: int = 10**6):
        self.f_flag, self.f_bavail, self.f_frsize = flag, free_blocks, 4096


def test_read_only_and_full_filesystems_are_refused(tmp_path: Path, monkeypatch):
    # A real read-only or full filesystem needs a mount; both were checked by hand on tmpfs mounts
    # (docs/reliability.md). Here statvfs reports them.
    monkeypatch.setattr(paths.os, "statvfs", lambda p: FakeStatvfs(flag=os.ST_RDONLY))
    with pytest.raises(PathError, match=f"{tmp_path} is on a read-only filesystem"):
        check_output_dir(tmp_path / "run")
    monkeypatch.setattr(paths.os, "statvfs", lambda p: FakeStatvfs(free_blocks=3))
    with pytest.raises(PathError, match=f"the disk holding {tmp_path} is full \\(12,288 bytes free\\)"):
        check_output_dir(tmp_path / "run")


@pytest.mark.parametrize("rel, message", [
    ("", "--run-dir: the path is empty"), ("file", "is a file, not a folder"),
    ("file/run", "is a file, not a folder, so nothing can be created under it"),
    ("dangling", "is a dangling symbolic link"), ("fifo", "is a FIFO"), ("a" * 300, "bytes long"),
    ("/dev/null", "is a device, not a folder"),
])
def test_classify_refuses_bad_run_dirs_in_one_line(place: Path, capsys, rel: str, message: str):
    raw = rel if rel in ("", "/dev/null") else str(place / rel)
    before = sorted(p.name for p in place.iterdir())
    with pytest.raises(SystemExit) as exc:
        classify_main(["--run-dir", raw, "--no-progress", "--set", "epochs=1"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err and err.count("\n") == 1, err
    assert sorted(p.name for p in place.iterdir()) == before


def _refused(main, argv: list[str], capsys, message: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err, err


TRAIN = ["--agent", "dqn", "--env", "CartPole-v1", "--steps", "100", "--no-progress"]


@pytest.mark.parametrize("rel, message", [
    ("", "--run-dir: the path is empty"),  # was read as "." (the working folder)
    ("file", "--run-dir '{place}/file' is a file, not a folder"),
    ("file/run", "file is a file, not a folder, so nothing can be created under it"),
    ("dangling", "is a dangling symbolic link"), ("fifo", "is a FIFO, not a folder"),
    ("/dev/null", "is a device, not a folder"), ("a" * 300, "is 300 bytes long"),
])
def test_train_refuses_bad_run_dirs_in_one_line(place: Path, capsys, rel: str, message: str):
    from rlagents.train import main as train_main

    raw = rel if rel in ("", "/dev/null") else str(place / rel)
    before = sorted(p.name for p in place.iterdir())
    _refused(train_main, [*TRAIN, "--run-dir", raw], capsys, message.format(place=place))
    _refused(train_main, ["--resume", raw], capsys, message.replace("--run-dir", "--resume").format(place=place))
    assert sorted(p.name for p in place.iterdir()) == before


def test_train_checks_its_default_run_dir(place: Path, capsys, monkeypatch):
    from rlagents.train import main as train_main

    monkeypatch.chdir(place)
    (place / "runs").write_text("a file where the runs folder belongs")
    _refused(train_main, TRAIN, capsys, "--run-dir 'runs/CartPole-v1__dqn__0__")
    assert (place / "runs").read_text().startswith("a file")


@pytest.mark.parametrize("rel, message", [
    ("file/v.gif", "file is a file, not a folder, so nothing can be created under it"),
    ("empty", "is a folder, not a file"), ("dangling", "is a dangling symbolic link"),
    ("fifo", "is a FIFO, not a file"), ("", "--video: the path is empty"),
])
def test_evaluate_refuses_bad_video_paths_before_playing(place: Path, short_dqn_run: Path, capsys, rel, message):
    from rlagents.evaluate import main as evaluate_main

    _refused(evaluate_main, [str(short_dqn_run), "--video", str(place / rel) if rel else ""], capsys, message)


@pytest.mark.parametrize("rel, message", [
    ("file", "--out '{place}/file' is a file, not a folder"), ("file/out", "so nothing can be created under it"),
    ("", "--out: the path is empty"),
])
def test_compare_refuses_bad_out_folders(place: Path, capsys, rel: str, message: str):
    from rlagents.compare import main as compare_main

    raw, message = str(place / rel) if rel else "", message.format(place=place)
    _refused(compare_main, ["--agents", "dqn", "--env", "CartPole-v1", "--out", raw], capsys, message)
    _refused(compare_main, ["--from", str(place), "--out", raw], capsys, message)


def test_the_python_api_checks_run_dirs_too(place: Path):
    import rlagents

    for run_dir, message in (("", "--run-dir: the path is empty"), (place / "file", "is a file, not a folder"),
                             (place / "file" / "run", "so nothing can be created under it")):
        with pytest.raises(rlagents.UserError, match=message):
            rlagents.train("dqn", "CartPole-v1", steps=100, run_dir=run_dir)
    assert sorted(p.name for p in place.iterdir()) == ["dangling", "empty", "fifo", "file", "link_to_dir"]

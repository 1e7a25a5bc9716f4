"""Videos: `evaluate --video FILE` (GIF or MP4 by suffix, `--video-episodes N`) and `train --capture-video`
(one greedy episode per evaluation into RUN_DIR/videos and TensorBoard)."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import imageio.v3 as iio
import numpy as np
import pytest

from rlagents.evaluate import main as evaluate_main
from rlagents.train import main as train_main


@pytest.fixture(scope="module")
def maze_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("videos") / "maze"
    assert train_main(["--agent", "qlearning", "--env", "MaskedMaze-v0", "--steps", "3000", "--seed", "2",
                       "--run-dir", str(run_dir), "--no-progress", "--eval-every", "1500", "--eval-episodes", "5",
                       "--capture-video"]) == 0
    return run_dir


def frame_count(path: Path) -> int:
    return sum(1 for _ in iio.imiter(path))


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_evaluate_writes_a_video_of_n_episodes(maze_run: Path, tmp_path: Path, capsys, suffix):
    one, three = tmp_path / f"one{suffix}", tmp_path / f"three{suffix}"
    assert evaluate_main([str(maze_run), "--video", str(one)]) == 0
    frames_one = int(capsys.readouterr().out.split(f"video: {one} (")[1].split(" frames")[0])
    assert evaluate_main([str(maze_run), "--video", str(three), "--video-episodes", "3"]) == 0
    frames_three = int(capsys.readouterr().out.split(f"video: {three} (")[1].split(" frames")[0])
    assert frames_three > frames_one >= 2  # the first episode again, then two more
    assert frame_count(one) == frames_one and frame_count(three) == frames_three
    first = next(iter(iio.imiter(one)))
    assert first.shape[:2] == (160, 160) and first.dtype == np.uint8  # the maze: 5 cells of 32 pixels
    assert not list(tmp_path.glob(".*tmp*"))  # written through a temporary file, renamed


def test_train_capture_video_records_each_evaluation(maze_run: Path):
    videos = sorted((maze_run / "videos").glob("*.mp4"))
    assert [v.name for v in videos] == ["step_000000001500.mp4", "step_000000003000.mp4"]
    assert all(frame_count(v) >= 2 for v in videos)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(maze_run), size_guidance={"images": 0})
    events.Reload()
    images = events.Images("videos/greedy_episode")
    assert [i.step for i in images] == [1500, 3000]
    assert images[0].encoded_image_string[:6] == b"GIF89a"  # an animated GIF, as add_video writes


class NoRender(gym.Env):
    observation_space = gym.spaces.Discrete(2)
    action_space = gym.spaces.Discrete(2)
    metadata = {"render_modes": []}

    def __init__(self, render_mode=None):
        self.render_mode = render_mode

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return 0, {}

    def step(self, action):
        return 0, 1.0, True, False, {}


def run_bad(main, argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err  # one line
    return err


def test_bad_video_input_is_one_line_exit_2(maze_run: Path, tmp_path: Path, capsys):
    assert "unsupported format '.avi'; valid: .gif, .mp4" in run_bad(
        evaluate_main, [str(maze_run), "--video", str(tmp_path / "v.avi")], capsys)
    assert "--video-episodes must be an integer from 1 to 1,000, got 0" in run_bad(
        evaluate_main, [str(maze_run), "--video", str(tmp_path / "v.mp4"), "--video-episodes", "0"], capsys)
    if "NoRender-v0" not in gym.registry:
        gym.register("NoRender-v0", entry_point=NoRender, max_episode_steps=5)
    run_dir = tmp_path / "norender"
    err = run_bad(train_main, ["--agent", "qlearning", "--env", "NoRender-v0", "--steps", "100", "--run-dir",
                               str(run_dir), "--no-progress", "--capture-video"], capsys)
    assert "--capture-video: env NoRender-v0 does not render rgb_array frames" in err
    assert not run_dir.exists() and not list(tmp_path.glob("*.mp4"))


def test_filming_a_pygame_env_without_a_display_prints_no_sdl_errors(tmp_path: Path):
    # CartPole draws with pygame-ce; on a headless machine SDL used to print "error: XDG_RUNTIME_DIR is
    # invalid or not set" from the video driver it opened, though rgb_array frames never need one.
    import os
    import subprocess
    import sys

    run_dir = tmp_path / "cartpole"
    assert train_main(["--agent", "dqn", "--env", "CartPole-v1", "--steps", "500", "--run-dir", str(run_dir),
                       "--no-progress", "--eval-episodes", "1"]) == 0
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "XDG_RUNTIME_DIR", "SDL_VIDEODRIVER")}
    done = subprocess.run([sys.executable, "-m", "rlagents.evaluate", str(run_dir), "--episodes", "1", "--video",
                           str(tmp_path / "cartpole.gif")], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and (tmp_path / "cartpole.gif").is_file(), done.stderr
    assert "XDG_RUNTIME_DIR" not in done.stderr and "error" not in done.stderr, done.stderr

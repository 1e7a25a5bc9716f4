"""Videos of greedy episodes: files (GIF or MP4, by suffix) and TensorBoard.

GIFs are written by Pillow, MP4s (H.264) by imageio through imageio-ffmpeg, whose wheel ships its own ffmpeg
binary: no system ffmpeg is needed. TensorBoard gets the episode as an animated GIF in an image summary, which
is what `SummaryWriter.add_video` writes too; that method encodes through `moviepy.editor`, which moviepy 2
no longer has, so the GIF is encoded here with Pillow instead of adding moviepy 1 (and its own imageio and
decorator pins) as a dependency. Files are written to a temporary name and renamed, so an interrupted write
leaves no partial video.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rlagents import obs as batches
from rlagents.environments import make_env
from rlagents.envspec import EnvSpec, as_env_spec
from rlagents.errors import UserError
from rlagents.loop import LoopListener
from rlagents.masks import single_mask
from rlagents.paths import check_output_file

VIDEO_FORMATS = (".gif", ".mp4")
MAX_FRAMES = 2_000  # per episode: a greedy policy that never ends the episode still gives a finite video
DEFAULT_FPS = 30
VIDEO_DIR = "videos"  # inside a run directory, for `train --capture-video`

Policy = Callable[..., np.ndarray]  # (obs batch, mask batch or None) -> actions


def check_video_file(path: Path, option: str = "--video") -> None:
    """Refuse, before any work, a video path with an unknown suffix or one that cannot be written."""
    if path.suffix.lower() not in VIDEO_FORMATS:
        raise UserError(f"{option} {path}: unsupported format {path.suffix or '(none)'!r}; valid: "
                        f"{', '.join(VIDEO_FORMATS)}")
    if path.is_dir():
        raise UserError(f"{option} {path} is a folder; give a file name ending in .gif or .mp4")
    if path.suffix.lower() == ".mp4":
        require_mp4(option)
    check_output_file(path, option)


def require_mp4(option: str) -> None:
    """A one-line UserError when the MP4 writer (imageio with imageio-ffmpeg) is not installed."""
    import importlib.util

    missing = [name for name in ("imageio", "imageio_ffmpeg") if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(f"{option}: MP4 videos need {' and '.join(missing)}: pip install 'rlagents[video]'"
                        f"{' (or write a .gif)' if option == '--video' else ''}")


def frame_env(env_spec: str | EnvSpec):
    """The env rendering `rgb_array` frames. On a machine without a display, SDL (behind pygame-ce, which
    Gymnasium draws with) would print "error: XDG_RUNTIME_DIR is invalid…" while opening a video driver that
    off-screen frames never use: its dummy driver is chosen instead, unless the user chose one."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    return make_env(env_spec, render_mode="rgb_array")


def check_renders(env_spec: str | EnvSpec, option: str) -> None:
    """Refuse an env that cannot render `rgb_array` frames (a one-line UserError naming `option`)."""
    env_id = as_env_spec(env_spec).id
    env = frame_env(env_spec)
    try:
        modes = env.metadata.get("render_modes") or []
        frame = None
        if "rgb_array" in modes:
            env.reset(seed=0)
            frame = env.render()
    finally:
        env.close()
    if not _is_frame(frame):
        raise UserError(f"{option}: env {env_id} does not render rgb_array frames (its render modes: "
                        f"{', '.join(modes) or 'none'}), so no video can be recorded")


def _is_frame(frame: Any) -> bool:
    return isinstance(frame, np.ndarray) and frame.ndim == 3 and frame.shape[2] in (3, 4) and frame.size > 0


def record_episodes(policy: Policy, env_spec: str | EnvSpec, episodes: int, seed: int,
                    max_frames: int = MAX_FRAMES, reset: Callable[[np.ndarray | None], None] | None = None
                    ) -> tuple[list[np.ndarray], int]:
    """Frames of `episodes` greedy episodes of `policy` (seeded `seed`, `seed + 1`, ...), one after the other;
    returns (frames, frames per second of the env). `policy(obs_batch, masks)` gets a batch of one observation
    and its action mask (None where the env gives none); `reset(None)`, if given, is called at each episode's
    start (an agent's `reset_memory`)."""
    env = frame_env(env_spec)
    frames: list[np.ndarray] = []
    try:
        for episode in range(episodes):
            obs, info = env.reset(seed=seed + episode)
            if reset is not None:
                reset(None)
            count = 0
            done = False
            while True:
                frame = env.render()
                if _is_frame(frame):
                    frames.append(np.asarray(frame[:, :, :3], dtype=np.uint8))
                    count += 1
                if done or count >= max_frames:
                    break
                batch = batches.stack([obs])
                action = policy(batch, single_mask(obs, info, env.action_space))[0]
                obs, _, terminated, truncated, info = env.step(action)
                done = terminated or truncated
        fps = int(env.metadata.get("render_fps") or DEFAULT_FPS)
    finally:
        env.close()
    if not frames:
        raise UserError(f"env {as_env_spec(env_spec).id} rendered no rgb_array frames; cannot record a video")
    return frames, fps


def write_video(frames: list[np.ndarray], path: Path, fps: int) -> None:
    """Write `frames` (H×W×3 uint8) to `path` as a GIF or an MP4 (by suffix), atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{suffix}")  # the suffix tells imageio which format to write
    try:
        if suffix == ".gif":
            tmp.write_bytes(gif_bytes(frames, fps))
        elif suffix == ".mp4":
            _write_mp4(frames, tmp, fps)
        else:
            raise UserError(f"{path}: unsupported video format {suffix!r}; valid: {', '.join(VIDEO_FORMATS)}")
        os.replace(tmp, path)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)


def gif_bytes(frames: list[np.ndarray], fps: int) -> bytes:
    """An animated GIF of `frames`, looping, as bytes."""
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    out = io.BytesIO()
    images[0].save(out, format="GIF", save_all=True, append_images=images[1:], duration=max(1, int(1000 / fps)),
                   loop=0)
    return out.getvalue()


def _write_mp4(frames: list[np.ndarray], path: Path, fps: int) -> None:
    require_mp4(str(path))
    import imageio.v2 as imageio
    # H.264 in yuv420p needs even sizes: pad by repeating the last row/column rather than let ffmpeg rescale
    height, width = frames[0].shape[:2]
    pad = ((0, height % 2), (0, width % 2), (0, 0))
    with imageio.get_writer(path, format="FFMPEG", mode="I", fps=fps, codec="libx264", quality=7,
                            pixelformat="yuv420p", macro_block_size=2, ffmpeg_log_level="error") as writer:
        for frame in frames:
            writer.append_data(np.pad(frame, pad, mode="edge") if any(p[1] for p in pad) else frame)


def tensorboard_video(writer: Any, tag: str, frames: list[np.ndarray], fps: int, step: int) -> None:
    """Show `frames` in TensorBoard (Images tab) as an animated GIF at `step`: the summary `add_video` writes."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    height, width = frames[0].shape[:2]
    image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=gif_bytes(frames, fps))
    writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)


class VideoCapture(LoopListener):
    """`train --capture-video`: inside each evaluation (so its seconds are evaluation seconds), one greedy
    episode from the evaluation seed to `RUN_DIR/videos/step_<step>.mp4` and to TensorBoard (tag
    `videos/greedy_episode`); the evaluation record gets the file's path (`video`), which trackers pick up."""

    def __init__(self, env_spec: str | EnvSpec):
        self.env_spec = env_spec
        self.writer: Any = None

    def start(self, run: Any, state: Any, resumed: bool) -> None:
        from torch.utils.tensorboard import SummaryWriter

        from rlagents.loop import EVAL_SEED_OFFSET

        self.run_dir, self.seed = Path(run.run_dir), run.seed + EVAL_SEED_OFFSET
        self.reset = run.agent.reset_memory
        # its own event file next to the scalars' (TensorBoard reads every event file of a folder)
        self.writer = SummaryWriter(log_dir=str(run.run_dir), filename_suffix=".videos")

    def during_evaluation(self, step: int, policy: Policy) -> dict[str, Any]:
        frames, fps = record_episodes(policy, self.env_spec, 1, self.seed, reset=self.reset)
        path = Path(VIDEO_DIR) / f"step_{step:012d}.mp4"
        write_video(frames, self.run_dir / path, fps)
        tensorboard_video(self.writer, "videos/greedy_episode", frames, fps, step)
        return {"video": str(path)}

    def end(self, status: str, summary: dict[str, Any] | None) -> None:
        if self.writer is not None:
            self.writer.close()

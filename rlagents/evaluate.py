"""`python -m rlagents.evaluate RUN_DIR`: reload a run's final checkpoint and measure its greedy policy."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from rlagents.cli import ArgumentParser, count_arg, output_file_arg, resolve_device, seed_arg
from rlagents.config import MAX_EPISODES
from rlagents.environments import EVAL_STEP_CAP, evaluate, make_env, make_vec_env
from rlagents.errors import UserError, cli_entry
from rlagents.loop import EVAL_SEED_OFFSET
from rlagents.onnx_policy import OnnxPolicy
from rlagents.runs import LoadedRun, load_run
from rlagents.threads import set_cpu_threads

VIDEO_FORMATS = (".gif",)


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m rlagents.evaluate", description=__doc__)
    p.add_argument("run_dir", type=Path, help="a run directory written by rlagents.train")
    p.add_argument("--episodes", type=count_arg("--episodes", MAX_EPISODES), default=None,
                   help="episodes to run (default: the run's eval_episodes)")
    p.add_argument("--seed", type=seed_arg(), default=None,
                   help="seed of the evaluation episodes (default: the run's own, which reproduces its summary)")
    p.add_argument("--checkpoint", type=Path, default=None, help="checkpoint JSON (default: the final one)")
    p.add_argument("--onnx", type=Path, default=None,
                   help="play this exported policy (python -m rlagents.export) through onnxruntime instead")
    p.add_argument("--video", type=output_file_arg("--video"), default=None,
                   help="record one greedy episode to this .gif file")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu", help="torch device (default cpu)")
    return p


def spaces_of(env_id: str):
    env = make_env(env_id)
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


def record_video(run: LoadedRun, path: Path, seed: int, max_frames: int = 2_000) -> int:
    """Record one greedy episode as an animated GIF; returns the number of frames."""
    from PIL import Image

    env = make_env(run.env_id, render_mode="rgb_array")
    frames = []
    try:
        obs, _ = env.reset(seed=seed)
        frames.append(env.render())
        done = False
        while not done and len(frames) < max_frames:
            action = run.agent.act(np.asarray(obs)[None], explore=False)[0]
            obs, _, terminated, truncated, _ = env.step(action)
            frames.append(env.render())
            done = terminated or truncated
    finally:
        env.close()
    fps = int(env.metadata.get("render_fps", 30) or 30)
    images = [Image.fromarray(np.asarray(f)) for f in frames if f is not None]
    if not images:
        raise UserError(f"env {run.env_id} renders no rgb_array frames; cannot record a video")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    tmp.replace(path)
    return len(images)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.video is not None and args.video.suffix.lower() not in VIDEO_FORMATS:
        raise UserError(f"--video {args.video}: unsupported format {args.video.suffix or '(none)'!r}; "
                        f"valid: {', '.join(VIDEO_FORMATS)}")
    set_cpu_threads(1)
    run = load_run(args.run_dir, spaces_of, device=resolve_device(args.device), checkpoint=args.checkpoint)
    episodes = args.episodes or run.config.train.eval_episodes
    seed = args.seed if args.seed is not None else run.seed + EVAL_SEED_OFFSET
    envs = make_vec_env(run.env_id, min(run.config.train.eval_envs, episodes), step_cap=EVAL_STEP_CAP)
    if args.onnx is not None:
        policy = OnnxPolicy.load(args.onnx, env_id=run.env_id)
        source = policy.source()
    else:
        policy = lambda o: run.agent.act(o, explore=False)  # noqa: E731
        source = f"{run.checkpoint.name}, step {run.meta.get('step')}"
    returns, lengths = evaluate(policy, envs, episodes, seed)
    envs.close()
    print(f"{run.agent_name} on {run.env_id} ({source}): "
          f"return {returns.mean():.2f} ± {returns.std():.2f} over {episodes} episodes "
          f"(mean length {lengths.mean():.1f})")
    env = make_env(run.env_id)
    try:
        for line in run.agent.inspect(env, run.run_dir):
            print(line)
    finally:
        env.close()
    if args.video is not None:
        n = record_video(run, args.video, seed)
        print(f"video: {args.video} ({n} frames)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

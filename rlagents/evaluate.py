"""`python -m rlagents.evaluate RUN_DIR`: reload a run's final checkpoint and measure its greedy policy."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from rlagents.cli import ArgumentParser, resolve_device
from rlagents.environments import EVAL_STEP_CAP, evaluate, make_env, make_vec_env
from rlagents.errors import UserError, cli_entry
from rlagents.loop import EVAL_SEED_OFFSET
from rlagents.onnx_policy import OnnxPolicy
from rlagents.runs import load_run
from rlagents.video import check_renders, check_video_file, record_episodes, write_video


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m rlagents.evaluate", description=__doc__)
    p.add_argument("run_dir", type=Path, help="a run directory written by rlagents.train")
    p.add_argument("--episodes", type=int, default=None, help="episodes to run (default: the run's eval_episodes)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the evaluation episodes (default: the run's own, which reproduces its summary)")
    p.add_argument("--checkpoint", type=Path, default=None, help="checkpoint JSON (default: the final one)")
    p.add_argument("--onnx", type=Path, default=None,
                   help="play this exported policy (python -m rlagents.export) through onnxruntime instead")
    p.add_argument("--video", type=Path, default=None,
                   help="record greedy episodes to this .gif or .mp4 file (the format follows the suffix)")
    p.add_argument("--video-episodes", type=int, default=1, metavar="N",
                   help="episodes in the video, one after the other (default 1)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu", help="torch device (default cpu)")
    return p


def spaces_of(env_id: str):
    env = make_env(env_id)
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.video is not None:
        check_video_file(args.video)
    if args.video_episodes < 1:
        raise UserError(f"--video-episodes must be >= 1, got {args.video_episodes}")
    if args.episodes is not None and args.episodes < 1:
        raise UserError(f"--episodes must be >= 1, got {args.episodes}")
    torch.set_num_threads(1)
    run = load_run(args.run_dir, spaces_of, device=resolve_device(args.device), checkpoint=args.checkpoint)
    if args.video is not None:
        check_renders(run.env_id, "--video")
    episodes = args.episodes or run.config.train.eval_episodes
    seed = args.seed if args.seed is not None else run.seed + EVAL_SEED_OFFSET
    envs = make_vec_env(run.env_id, min(run.config.train.eval_envs, episodes), step_cap=EVAL_STEP_CAP)
    if args.onnx is not None:
        policy = OnnxPolicy.load(args.onnx, env_id=run.env_id)
        source = policy.source()
    else:
        policy = run.agent.greedy  # (obs, masks) for envs with action masks
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
        frames, fps = record_episodes(policy, run.env_id, args.video_episodes, seed)
        write_video(frames, args.video, fps)
        print(f"video: {args.video} ({len(frames)} frames, {args.video_episodes} episode(s) from seed {seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m rlagents.evaluate RUN_DIR`: reload a run's final checkpoint and measure its greedy policy."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from rlagents import _entry_module
from rlagents.cli import ArgumentParser, count_arg, output_file_arg, resolve_device, seed_arg
from rlagents.config import MAX_EPISODES
from rlagents.validate import check_count, check_seed
from rlagents.environments import EVAL_STEP_CAP, evaluate, make_env, make_vec_env
from rlagents.envspec import EnvSpec
from rlagents.errors import cli_entry
from rlagents.loop import EVAL_SEED_OFFSET
from rlagents.onnx_policy import OnnxPolicy
from rlagents.runs import LoadedRun, load_run
from rlagents.threads import set_cpu_threads
from rlagents.video import check_renders, check_video_file, record_episodes, write_video

MAX_VIDEO_EPISODES = 1_000  # each up to 2,000 frames, held in memory until written


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
                   help="record greedy episodes to this .gif or .mp4 file (the format follows the suffix)")
    p.add_argument("--video-episodes", type=count_arg("--video-episodes", MAX_VIDEO_EPISODES), default=1,
                   metavar="N", help="episodes in the video, one after the other (default 1)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu", help="torch device (default cpu)")
    return p


def spaces_of(env: str | EnvSpec) -> tuple[gym.Space, gym.Space]:
    """(observation space, action space) of a fresh `env`."""
    env = make_env(env)
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


def evaluate_run(run: LoadedRun, episodes: int | None = None, seed: int | None = None,
                 policy: Callable[..., Any] | None = None,
                 counts: dict[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Greedy episodes of `run`'s agent (or of `policy`) on its env: by default its own final evaluation
    (`eval_episodes` episodes from its evaluation seed), which reproduces the summary. Returns (returns,
    lengths, seed). `episodes` and `seed` are checked here too, for the Python API (`Policy.evaluate`). Envs
    with action masks call `policy(obs, masks)`. `counts`, if given, receives what `environments.evaluate` counts
    (`success_rate` for envs that report `info["is_success"]`)."""
    episodes = run.config.train.eval_episodes if episodes is None else check_count(episodes, "episodes",
                                                                                   high=MAX_EPISODES)
    seed = run.seed + EVAL_SEED_OFFSET if seed is None else check_seed(seed, "seed")
    reset = None
    if policy is None:
        policy, reset = run.agent.greedy, run.agent.reset_memory  # (obs, masks) for envs with action masks
    envs = make_vec_env(run.env, min(run.config.train.eval_envs, episodes), step_cap=EVAL_STEP_CAP)
    try:
        returns, lengths = evaluate(policy, envs, episodes, seed, counts=counts, reset=reset)
    finally:
        envs.close()
    return returns, lengths, seed


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.video is not None:
        check_video_file(args.video)
    set_cpu_threads(1)
    run = load_run(args.run_dir, spaces_of, device=resolve_device(args.device), checkpoint=args.checkpoint)
    if args.video is not None:
        check_renders(run.env, "--video")
    if args.onnx is not None:
        policy = OnnxPolicy.load(args.onnx, env_id=run.env_id)
        source = policy.source()
    else:
        policy = None
        source = f"{run.checkpoint.name}, step {run.meta.get('step')}"
    counts: dict[str, Any] = {}
    returns, lengths, seed = evaluate_run(run, args.episodes, args.seed, policy, counts)
    success = f", success rate {counts['success_rate']:.3f}" if "success_rate" in counts else ""  # goal envs
    print(f"{run.agent_name} on {run.env_id} ({source}): "
          f"return {returns.mean():.2f} ± {returns.std():.2f} over {len(returns)} episodes "
          f"(mean length {lengths.mean():.1f}){success}")
    env = make_env(run.env)
    try:
        for line in run.agent.inspect(env, run.run_dir):
            print(line)
    finally:
        env.close()
    if args.video is not None:  # the checkpoint's agent, also with --onnx
        frames, fps = record_episodes(run.agent.greedy, run.env, args.video_episodes, seed,
                                      reset=run.agent.reset_memory)
        write_video(frames, args.video, fps)
        print(f"video: {args.video} ({len(frames)} frames, {args.video_episodes} episode(s) from seed {seed})")
    return 0


_entry_module(__name__)  # rlagents.evaluate(...) is the Python API's evaluate (see rlagents/__init__.py)

if __name__ == "__main__":
    sys.exit(main())

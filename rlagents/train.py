"""`python -m rlagents.train --agent dqn --env CartPole-v1`: train one agent on one env and save the run."""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
from datetime import datetime
from pathlib import Path

import torch

from rlagents.agents import agent_class, available_agents
from rlagents.checkpoint import (CHECKPOINT_DIR, FINAL, atomic_write_text, check_spaces, read_checkpoint,
                                 remove_stale_temp_files, step_checkpoints)
from rlagents.cli import ArgumentParser, default_config_path, resolve_device
from rlagents.config import ResolvedConfig, dump_resolved, parse_overrides, read_config_file, resolve
from rlagents.environments import EVAL_STEP_CAP, check_env, is_project_env, known_env_ids, make_vec_env
from rlagents.errors import UserError, cli_entry
from rlagents.loop import Run, seed_everything, train
from rlagents.runs import build_agent
from rlagents.trackers import DEFAULT_PROJECT, TRACKERS, open_trackers, require_tracker
from rlagents.video import check_renders, require_mp4

RUNS_DIR = Path("runs")


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m rlagents.train", description=__doc__)
    p.add_argument("--agent", help=f"agent to train ({', '.join(available_agents())})")
    p.add_argument("--env", help="Gymnasium env id, e.g. CartPole-v1")
    p.add_argument("--config", type=Path, help="config YAML (default: configs/<agent>.yaml); a run's "
                   "config.yaml reproduces that run")
    p.add_argument("--steps", type=int, help="total env steps (default: the config's entry for the env)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, typed by its field (repeatable)")
    p.add_argument("--run-dir", type=Path, help="output folder (default: runs/<env>__<agent>__<seed>__<time>)")
    p.add_argument("--n-envs", type=int, help="training envs stepped together")
    p.add_argument("--eval-every", type=int, help="env steps between greedy evaluations")
    p.add_argument("--eval-episodes", type=int, help="episodes per evaluation")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None, help="torch device (default auto)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--check-env", action=argparse.BooleanOptionalAction, default=None,
                   help="run Gymnasium's env checker before training (default: on for our own envs/)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR",
                   help="continue a stopped run from its newest checkpoint, with the run's own config")
    add_output_options(p)
    p.add_argument("--list-agents", action="store_true", help="list agents and exit")
    p.add_argument("--list-envs", action="store_true", help="list registered env ids and exit")
    return p


def add_output_options(p: ArgumentParser) -> None:
    """Where a run's results go besides TensorBoard: videos and experiment trackers."""
    p.add_argument("--capture-video", action="store_true",
                   help="record one greedy episode at each evaluation into RUN_DIR/videos (MP4) and TensorBoard "
                   "(envs that render rgb_array; not counted in training time)")
    p.add_argument("--track", action="append", choices=TRACKERS, default=[],
                   help="also send scalars, config and summary to Weights & Biases (offline) or MLflow (repeatable)")
    p.add_argument("--track-project", default=DEFAULT_PROJECT,
                   help=f"W&B project / MLflow experiment name (default {DEFAULT_PROJECT})")
    p.add_argument("--track-uri", default=None,
                   help="MLflow tracking URI: a server URL or sqlite:///FILE (default: $MLFLOW_TRACKING_URI, else "
                   "./mlflow.db)")


def check_output_options(args, env_id: str) -> None:
    """Refuse, before anything is built or written, a tracker that is not installed or a video of an env that
    cannot render."""
    for kind in args.track:
        require_tracker(kind)
    if args.capture_video:
        require_mp4("--capture-video")
        check_renders(env_id, "--capture-video")


def start_trackers(run: Run, args) -> None:
    """Open the `--track` runs (creating the run directory; removed again if a tracker cannot start)."""
    if not args.track:
        return
    created = not run.run_dir.exists()
    run.run_dir.mkdir(parents=True, exist_ok=True)
    config = {"run": {"agent": run.agent_name, "env": run.env_id, "seed": run.seed, "device": str(run.device),
                      "run_dir": str(run.run_dir)},
              "train": dataclasses.asdict(run.config.train), "agent": dataclasses.asdict(run.config.agent)}
    try:
        run.trackers = open_trackers(args.track, run.run_dir, config, project=args.track_project,
                                     uri=args.track_uri)
    except UserError:
        if created:
            shutil.rmtree(run.run_dir, ignore_errors=True)
        raise


RUN_OPTIONS = ("agent", "env", "config", "steps", "seed", "overrides", "run_dir", "n_envs", "eval_every",
               "eval_episodes")


def prepare(args) -> Run:
    """Validate everything and build the agent and envs; writes nothing to disk."""
    data: dict = {}
    if args.resume is not None:
        given = [f"--{k.replace('_', '-')}" if k != "overrides" else "--set" for k in RUN_OPTIONS
                 if getattr(args, k) not in (None, [])]
        if given:
            raise UserError(f"--resume continues the run with its own config; drop {', '.join(given)}")
        if not (args.resume / "config.yaml").is_file():
            raise UserError(f"--resume {args.resume}: not an rlagents run directory (no config.yaml)")
        args.config = args.resume / "config.yaml"
    if args.config is not None:
        data = read_config_file(args.config)
    meta = data.get("run") or {}
    agent_name = args.agent or meta.get("agent")
    env_id = args.env or meta.get("env")
    if agent_name is None:
        raise UserError(f"--agent is required; valid agents: {', '.join(available_agents())}")
    if env_id is None:
        raise UserError("--env is required, e.g. --env CartPole-v1 (see --list-envs)")
    cls = agent_class(agent_name)
    check_output_options(args, env_id)
    config_path = args.config or default_config_path(agent_name)
    if args.config is None:
        data = read_config_file(config_path)
    seed = args.seed if args.seed is not None else int(meta.get("seed", 0))
    device = resolve_device(args.device or meta.get("device", "auto"))

    overrides = parse_overrides(args.overrides)
    for key, value in (("steps", args.steps), ("n_envs", args.n_envs), ("eval_every", args.eval_every),
                       ("eval_episodes", args.eval_episodes)):
        if value is not None:
            overrides[key] = value
    config: ResolvedConfig = resolve(cls.config_class, data, env_id, overrides, source=str(config_path))

    if args.check_env or (args.check_env is None and is_project_env(env_id)):
        check_env(env_id)
    envs = make_vec_env(env_id, config.train.n_envs, training=True, record_episodes=True)  # resumable episodes
    eval_envs = make_vec_env(env_id, min(config.train.eval_envs, config.train.eval_episodes), step_cap=EVAL_STEP_CAP)
    torch.set_num_threads(config.train.torch_threads)
    seed_everything(seed)
    agent = build_agent(agent_name, config, envs.single_observation_space, envs.single_action_space,
                        n_envs=envs.num_envs, seed=seed, device=device, env_masks=envs.masked)

    if args.resume is not None:
        return Run(agent_name=agent_name, env_id=env_id, seed=seed, device=device, config=config, agent=agent,
                   envs=envs, eval_envs=eval_envs, run_dir=args.resume, progress=not args.no_progress,
                   capture_video=args.capture_video)
    run_dir = args.run_dir or RUNS_DIR / (f"{env_id.replace('/', '-')}__{agent_name}__{seed}__"
                                          f"{datetime.now().strftime('%Y%m%d-%H%M%S-%f')}")
    if run_dir.exists() and any(run_dir.iterdir()):
        raise UserError(f"run directory {run_dir} already exists and is not empty; choose another --run-dir")
    return Run(agent_name=agent_name, env_id=env_id, seed=seed, device=device, config=config, agent=agent,
               envs=envs, eval_envs=eval_envs, run_dir=run_dir, progress=not args.no_progress,
               capture_video=args.capture_video)


def train_new(run: Run) -> dict:
    """Create the run directory, write the resolved config, and train from scratch; returns the summary."""
    run.run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.run_dir / "config.yaml", dump_resolved(
        run.config, agent=run.agent_name, env_id=run.env_id, seed=run.seed, device=str(run.device)))
    return train(run)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_agents:
        print("\n".join(available_agents()))
        return 0
    if args.list_envs:
        print("\n".join(known_env_ids()))
        return 0
    run = prepare(args)
    if args.resume is not None:
        if (run.run_dir / CHECKPOINT_DIR / f"{FINAL}.json").is_file():
            raise UserError(f"run {run.run_dir} already finished ({CHECKPOINT_DIR}/{FINAL}.json): nothing to resume")
        remove_stale_temp_files(run.run_dir)  # a run killed mid-write (SIGKILL, power loss) leaves one
        candidates = step_checkpoints(run.run_dir)
        if not candidates:
            raise UserError(f"no checkpoint to resume from in {run.run_dir / CHECKPOINT_DIR}")
        resume, meta = read_checkpoint(candidates[-1], agent=run.agent_name, env=run.env_id)
        check_spaces(meta, run.envs.single_observation_space, run.envs.single_action_space, candidates[-1])
        if "loop" not in resume:
            raise UserError(f"{candidates[-1]} is not a training checkpoint (no loop state)")
        start_trackers(run, args)
        summary = train(run, resume)
    else:
        start_trackers(run, args)
        summary = train_new(run)
    if summary["status"] == "interrupted":
        print(f"interrupted at step {summary['total_steps']}; a checkpoint was saved. Continue with: "
              f"python -m rlagents.train --resume {run.run_dir}", file=sys.stderr)
        return 130
    solved = (f"solved at step {summary['solved_at_step']} ({summary['solved_at_time_s']} s of training)"
              if summary["solved_at_step"] is not None else "not solved")
    print(f"{run.agent_name} on {run.env_id} seed {run.seed}: eval return {summary['eval_return_mean']:.2f} ± "
          f"{summary['eval_return_std']:.2f} over {summary['eval_episodes']} episodes; {solved}; "
          f"{summary['env_steps_per_s']:,.0f} env steps/s; {summary['total_steps']} steps in "
          f"{summary['wall_time_s']:.1f} s. Run: {run.run_dir}")
    run.envs.close()
    run.eval_envs.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

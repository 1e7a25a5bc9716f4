"""`python -m rlagents.train --agent dqn --env CartPole-v1`: train one agent on one env and save the run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rlagents import _entry_module
from rlagents.agents import available_agents
from rlagents.api import TrainResult, resume_spec, train_spec
from rlagents.cli import ArgumentParser, output_dir_arg, seed_arg
from rlagents.config import parse_overrides
from rlagents.environments import known_env_ids
from rlagents.envspec import import_env_module, parse_env_kwargs
from rlagents.errors import UserError, cli_entry
from rlagents.loop import LoopListener
from rlagents.trackers import DEFAULT_PROJECT, TRACKERS, TrackerLog, require_tracker
from rlagents.video import VideoCapture, check_renders, require_mp4
from rlagents.loop import Run
from rlagents.runs import materialize
from rlagents.runspec import RunSpec, check_new_run_dir, resolve_spec, spec_of_run


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m rlagents.train", description=__doc__)
    p.add_argument("--agent", help=f"agent to train ({', '.join(available_agents())})")
    p.add_argument("--env", help="Gymnasium env id, e.g. CartPole-v1; an env of your own: package.module:EnvId-v0 "
                   "(the module registers it when imported) or package.module:make_env (a function returning one)")
    p.add_argument("--env-module", action="append", default=[], metavar="NAME",
                   help="import this module first, for the env ids it registers (repeatable)")
    p.add_argument("--env-kwargs", action="append", default=[], metavar="KEY=VALUE",
                   help="keyword argument of the env's constructor, the value read as YAML (repeatable)")
    p.add_argument("--config", type=Path, help="config YAML (default: configs/<agent>.yaml); a run's "
                   "config.yaml reproduces that run")
    p.add_argument("--steps", type=int, help="total env steps (default: the config's entry for the env)")
    p.add_argument("--seed", type=seed_arg(), help="random seed, 0 … 2**32 - 1 (default 0)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, typed by its field (repeatable)")
    p.add_argument("--run-dir", type=output_dir_arg("--run-dir"),
                   help="output folder (default: runs/<env>__<agent>__<seed>__<time>)")
    p.add_argument("--n-envs", type=int, help="training envs stepped together")
    p.add_argument("--eval-every", type=int, help="env steps between greedy evaluations")
    p.add_argument("--eval-episodes", type=int, help="episodes per evaluation")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None, help="torch device (default auto)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--check-env", action=argparse.BooleanOptionalAction, default=None,
                   help="run Gymnasium's env checker before training (default: on for our own envs/)")
    p.add_argument("--resume", type=output_dir_arg("--resume"), metavar="RUN_DIR",
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


def output_listeners(args, spec: RunSpec) -> list[LoopListener]:
    """The listeners `--capture-video` and `--track` ask for. Refuses, before anything is built or written, a
    tracker that is not installed or a video of an env that cannot render."""
    for kind in args.track:
        require_tracker(kind)
    listeners: list[LoopListener] = []
    if args.capture_video:
        require_mp4("--capture-video")
        check_renders(spec.env, "--capture-video")
        listeners.append(VideoCapture(spec.env))
    if args.track:
        listeners.append(TrackerLog(args.track, project=args.track_project, uri=args.track_uri))
    return listeners


RUN_OPTIONS = ("agent", "env", "env_module", "env_kwargs", "config", "steps", "seed", "overrides", "run_dir",
               "n_envs", "eval_every", "eval_episodes")


def spec_from_args(args) -> RunSpec:
    """The run the command line describes (a new one, or `--resume`'s), validated; writes nothing."""
    if args.resume is not None:
        given = [f"--{k.replace('_', '-')}" if k != "overrides" else "--set" for k in RUN_OPTIONS
                 if getattr(args, k) not in (None, [])]
        if given:
            raise UserError(f"--resume continues the run with its own config; drop {', '.join(given)}")
        if not (args.resume / "config.yaml").is_file():
            raise UserError(f"--resume {args.resume}: not an rlagents run directory (no config.yaml)")
        return spec_of_run(args.resume, device=args.device)
    overrides: dict = parse_overrides(args.overrides)
    for key, value in (("steps", args.steps), ("n_envs", args.n_envs), ("eval_every", args.eval_every),
                       ("eval_episodes", args.eval_episodes)):
        if value is not None:
            overrides[key] = value
    return resolve_spec(args.agent, args.env, seed=args.seed, config_file=args.config, overrides=overrides,
                        env_kwargs=parse_env_kwargs(args.env_kwargs), env_modules=args.env_module,
                        run_dir=args.run_dir, device=args.device)


def prepare(args) -> Run:
    """Validate everything and build the agent and envs; writes nothing to disk."""
    spec = spec_from_args(args)
    if args.resume is None:
        check_new_run_dir(spec)
    return materialize(spec, progress=not args.no_progress, check_env=args.check_env)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_agents:
        print("\n".join(available_agents()))
        return 0
    if args.list_envs:
        for module in args.env_module:  # the ids these modules register are listed too
            import_env_module(module, "--env-module")
        print("\n".join(known_env_ids()))
        return 0
    spec = spec_from_args(args)
    progress = not args.no_progress
    listeners = output_listeners(args, spec)
    if args.resume is not None:
        result = resume_spec(spec, progress=progress, check_env=args.check_env, listeners=listeners)
    else:
        result = train_spec(spec, progress=progress, check_env=args.check_env, listeners=listeners)
    return report(spec, result)


def report(spec: RunSpec, result: TrainResult) -> int:
    """Print the run's one-line outcome; the exit code (130 when interrupted)."""
    summary = result.summary
    if result.status != "completed":  # interrupted by a signal
        kept = summary.get("checkpoint")
        print(f"interrupted at step {summary['total_steps']}; "
              f"{f'resume point: {kept}' if kept else 'no checkpoint was written yet'}. Continue with: "
              f"python -m rlagents.train --resume {spec.run_dir}", file=sys.stderr)
        return 130
    solved = (f"solved at step {summary['solved_at_step']} ({summary['solved_at_time_s']} s of training)"
              if summary["solved_at_step"] is not None else "not solved")
    untuned = " (untuned config: its default: settings)" if spec.untuned else ""
    print(f"{spec.agent} on {spec.env.id} seed {spec.seed}{untuned}: eval return {summary['eval_return_mean']:.2f} ± "
          f"{summary['eval_return_std']:.2f} over {summary['eval_episodes']} episodes; {solved}; "
          f"{summary['env_steps_per_s']:,.0f} env steps/s; {summary['total_steps']} steps in "
          f"{summary['wall_time_s']:.1f} s. Run: {spec.run_dir}")
    return 0


_entry_module(__name__)  # rlagents.train(...) is the Python API's train (see rlagents/__init__.py)

if __name__ == "__main__":
    sys.exit(main())

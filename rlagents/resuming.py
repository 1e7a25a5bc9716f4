"""`python -m rlagents.train --resume RUN_DIR`: continue a stopped run, holding its lock.

The newest periodic checkpoint that reads, verifies and fits the agent is used; newer ones that do not (a
corrupt file, say) are named and skipped. A run stopped before its first checkpoint starts afresh in place.
The run's config.yaml must still be the config its checkpoint was trained with (`config_sha256`), except for
the loop settings of `config.RESUMABLE_KEYS` (how long the run goes on and how it is watched).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from rlagents.checkpoint import (BEST, CHECKPOINT_DIR, FINAL, check_inside, check_spaces, read_checkpoint,
                                 remove_stale_temp_files, step_checkpoints)
from rlagents.config import RESUMABLE_KEYS, config_sha256, config_values
from rlagents.errors import CheckpointError, ConfigError, UserError, one_line
from rlagents.loop import Callback, Run, check_session, train
from rlagents.runlock import run_lock
from rlagents.safeload import clip, shown
from rlagents.state_check import check_state

MAX_LISTED = 6  # changed keys named in one message


def resume_run(run: Run, callback: Callback | None = None) -> dict[str, Any]:
    """Continue `run` (built from its run directory's config.yaml) under the run's lock; returns the summary.
    `callback` is `loop.train`'s."""
    with run_lock(run.run_dir):
        folder = run.run_dir / CHECKPOINT_DIR
        if (folder / f"{FINAL}.json").is_file():
            raise UserError(f"run {run.run_dir} already finished ({CHECKPOINT_DIR}/{FINAL}.json): nothing to resume")
        remove_stale_temp_files(run.run_dir)  # a run killed mid-write (SIGKILL, power loss) leaves one
        candidates = step_checkpoints(run.run_dir)
        if not candidates:
            return start_afresh(run, callback)
        record, path = newest_usable(run, candidates)
        return train(run, record, callback, resume_from=str(path))


def start_afresh(run: Run, callback: Callback | None = None) -> dict[str, Any]:
    """Train a run that stopped before its first periodic checkpoint from scratch, in place, with its
    config.yaml; what the stopped session left (TensorBoard events, a best checkpoint) is removed first."""
    print(f"resume: {run.run_dir} has no checkpoint yet (it stopped before its first one); starting it afresh "
          f"with its config.yaml", file=sys.stderr)
    folder = run.run_dir / CHECKPOINT_DIR
    for stale in [*run.run_dir.glob("events.out.tfevents.*"), run.run_dir / "summary.json",
                  folder / f"{BEST}.json", folder / f"{BEST}.safetensors"]:
        stale.unlink(missing_ok=True)
    return train(run, callback=callback)


def newest_usable(run: Run, candidates: list[Path]) -> tuple[dict[str, Any], Path]:
    """The newest of `candidates` that reads, verifies and fits `run`'s agent, with its path; says on stderr
    which newer ones were skipped and why. A config.yaml edited since the checkpoint is refused at once."""
    skipped: list[str] = []
    for path in reversed(candidates):
        try:
            check_inside(path, path.parent)
            record, meta = read_checkpoint(path, agent=run.agent_name, env=run.env_id)
        except CheckpointError as exc:
            skipped.append(f"{path.name}: {one_line(exc)}")
            continue
        check_config_unchanged(run, meta, path)
        try:
            check_usable(run, record, meta, path)
        except CheckpointError as exc:
            skipped.append(f"{path.name}: {one_line(exc)}")
            continue
        if skipped:
            print(f"resume: skipped {len(skipped)} newer checkpoint{'s' if len(skipped) > 1 else ''} "
                  f"({clip('; '.join(skipped), 400)}); resuming from {path.name} (step {meta.get('step')})",
                  file=sys.stderr)
        return record, path
    raise CheckpointError(f"no usable checkpoint in {run.run_dir / CHECKPOINT_DIR} ({clip('; '.join(skipped), 400)})")


def check_usable(run: Run, record: dict[str, Any], meta: dict[str, Any], path: Path) -> None:
    """Refuse a checkpoint that cannot resume `run`: other spaces, no loop state, a state that does not fit."""
    check_spaces(meta, run.envs.single_observation_space, run.envs.single_action_space, path)
    if "loop" not in record:
        raise CheckpointError(f"{path} is not a training checkpoint (no loop state)")
    check_session(record, path)
    agent = record.get("agent")
    if not isinstance(agent, dict):
        raise CheckpointError(f"checkpoint {path}: its agent state must be a mapping, got {shown(agent)}")
    check_state(agent, run.agent.state_dict(), where=f"checkpoint {path} does not fit this agent",
                recorded=getattr(run.agent, "recorded_state", ()))


def check_config_unchanged(run: Run, meta: dict[str, Any], path: Path) -> None:
    """ConfigError naming the keys whose values differ between the run's config.yaml now and the config
    checkpoint `path` was trained with (its `config` record, or else its `config_sha256`); a note on stderr
    for changed `RESUMABLE_KEYS`."""
    now = config_values(run.config.train, run.config.agent, run.seed)
    recorded = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    then = config_values(recorded.get("train"), recorded.get("agent"), meta.get("seed"))
    # keys only one side has come from another rlagents version (a new field at its default): not an edit
    differ = sorted(k for k in now.keys() & then.keys() if now[k] != then[k])
    fixed = [k for k in differ if k not in RESUMABLE_KEYS]
    if fixed:
        listed = ", ".join(f"{k} {shown(then[k], 30)} → {shown(now[k], 30)}" for k in fixed[:MAX_LISTED])
        more = f" and {len(fixed) - MAX_LISTED} more" if len(fixed) > MAX_LISTED else ""
        raise ConfigError(f"--resume {run.run_dir}: config.yaml was edited since {path.name} was written "
                          f"({listed}{more}); a resumed run keeps its config: start a new run with "
                          f"--config {run.run_dir / 'config.yaml'} instead")
    expected = meta.get("config_sha256")
    hash_differs = expected is not None and expected != config_sha256(run.config.train, run.config.agent, run.seed)
    if hash_differs and (not recorded or not now.keys() ^ then.keys()):  # the recorded config says nothing more
        raise ConfigError(f"--resume {run.run_dir}: config.yaml differs from the config {path.name} was trained "
                          f"with (config_sha256); a resumed run keeps its config")
    if differ:
        print("resume: " + ", ".join(f"{k} {shown(then[k], 30)} → {shown(now[k], 30)}" for k in differ)
              + " (changed in config.yaml)", file=sys.stderr)

"""`python -m rlagents.compare`: report from synthetic run directories, failures isolated, a small real compare."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import rlagents
from rlagents import compare
from rlagents.errors import UserError


def _summary(agent: str, seed: int, finals: list[float], solved: int | None) -> dict:
    steps = [1000 * (i + 1) for i in range(len(finals))]
    return {"agent": agent, "env": "CartPole-v1", "seed": seed, "status": "completed", "total_steps": steps[-1],
            "env_steps_per_s": 1000.0 + seed, "train_time_s": steps[-1] / 1000, "eval_return_mean": finals[-1],
            "eval_return_std": 0.0, "eval_episodes": 20, "reward_threshold": 475.0, "solved_at_step": solved,
            "solved_at_time_s": None if solved is None else solved / 1000,
            "evaluations": [{"step": s, "train_time_s": s / 1000, "return_mean": r} for s, r in zip(steps, finals)]}


def _write_runs(root: Path) -> None:
    runs = {("good", 0): ([100.0, 500.0], 2000), ("good", 1): ([480.0, 490.0], 1000),
            ("good", 2): ([20.0, 30.0], None),
            ("weak", 0): ([10.0, 10.0], None), ("weak", 1): ([20.0, 20.0], None), ("weak", 2): ([30.0, 30.0], None)}
    for (agent, seed), (finals, solved) in runs.items():
        run_dir = root / f"CartPole-v1__{agent}__s{seed}"
        run_dir.mkdir(parents=True)
        (run_dir / "summary.json").write_text(json.dumps(_summary(agent, seed, finals, solved)))
    failed = root / "CartPole-v1__weak__s3"
    failed.mkdir()
    (failed / "summary.json").write_text(json.dumps({"agent": "weak", "env": "CartPole-v1", "seed": 3,
                                                     "status": "failed", "total_steps": 10}))


def test_report_from_synthetic_run_dirs(tmp_path, capsys):
    _write_runs(tmp_path / "runs")
    out = tmp_path / "report"
    assert compare.main(["--from", str(tmp_path / "runs"), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    # good: finals 500, 490, 30 -> IQM of 3 values trims nothing: 340.0; weak: 10, 20, 30 -> 20.0
    assert "| good | 3 | 340.0 [" in text
    assert "| weak | 3 (1 failed) | 20.0 [" in text
    assert "| 2/3 | 2/3 | 2,000 | 2.00 | 1,001 |" in text  # reached, ends >=, median steps, seconds, steps/s
    assert "| good | weak | 0.94 [" in text  # 8 of 9 pairs won, one tie (30 = 30) counts half
    assert "weak on CartPole-v1, seed 3: status failed" in text
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((out / "results.json").read_text())
    assert len(results["runs"]) == 7 and results["machine"]
    again = tmp_path / "again"  # rebuilt from a comparison folder: same tables, and it names where runs came from
    assert compare.main(["--from", str(out), "--out", str(again)]) == 0
    rebuilt = (again / "report.md").read_text()
    assert [line for line in rebuilt.splitlines() if line.startswith("|")] == [
        line for line in text.splitlines() if line.startswith("|")]
    assert f"Runs made by `python -m rlagents.compare --from {tmp_path / 'runs'}" in rebuilt


def test_bad_input_is_one_line_exit_2(tmp_path, capsys):
    for argv, needle in ((["--agents", "dqn,nope", "--env", "CartPole-v1"], "unknown agent 'nope'"),
                         (["--agents", "dqn", "--env", "CartPole-v1", "--set", "sb3-dqn.lr=1"], "not in --agents"),
                         (["--agents", "dqn", "--env", "CartPole-v1", "--set", "dqn.nope=1"], "unknown key 'nope'"),
                         (["--agents", "dqn", "--env", "Pendulum-v1"], "Discrete action space"),
                         (["--from", str(tmp_path)], "no results.json"),
                         (["--agents", "dqn", "--env", "CartPole-v1", "--seeds", "104-100"], "range is inverted"),
                         (["--agents", "dqn", "--env", "CartPole-v1", "--seeds", "3,7,3"], "lists a seed twice"),
                         (["--agents", "dqn", "--env", "CartPole-v1", "--seeds", "3;7"], "A,B,C (a list)"),
                         (["--agents", "dqn", "--env", "CartPole-v1", "--seeds", "0"], "at least 1"),
                         # `--seeds 0` reads as "seed 0" to many: the error names the forms that mean what they meant
                         (["--agents", "dqn", "--env", "CartPole-v1", "--seeds", "0"],
                          "--seeds 0: a count of seeds must be at least 1 (--seeds 5 runs seeds 0-4); for seed 0 alone "
                          "write --seeds 0-0, for a list --seeds 3,7"),
                         (["--agents", "dqn", "--env", "CartPole-v1", "--seeds", "-3"],
                          "for seed 0 alone write --seeds 0-0")):
        with pytest.raises(SystemExit) as exc:
            compare.main(argv + ["--out", str(tmp_path / "out")])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1


def test_explicit_seed_lists(tmp_path):
    """`--seeds 100-104` and `--seeds 3,7,11` run exactly those seeds (held-out comparisons); `--seeds 2` is 0, 1."""
    for text, seeds in (("100-104", [100, 101, 102, 103, 104]), ("3,7,11", [3, 7, 11]), ("2", [0, 1])):
        args = compare.build_parser().parse_args(["--agents", "dqn", "--env", "CartPole-v1", "--seeds", text,
                                                  "--out", str(tmp_path / text)])
        tasks, _ = compare.plan(args)
        assert [t.seed for t in tasks] == seeds
        assert tasks[-1].spec.seed == seeds[-1] and tasks[-1].run_dir.name.endswith(f"__s{seeds[-1]}")


def test_failing_run_does_not_sink_the_comparison(tmp_path):
    args = compare.build_parser().parse_args(["--agents", "dqn", "--env", "CartPole-v1", "--seeds", "2", "--steps",
                                              "200", "--set", "eval_episodes=2", "--out", str(tmp_path)])
    bad, good = compare.plan(args)[0]
    bad.run_dir.mkdir(parents=True)
    (bad.run_dir / "taken").write_text("")  # a folder that already holds something: refused in the worker
    with compare.Display([bad, good], enabled=False) as display:
        results = compare.run_local([bad, good], workers=1, display=display)
    assert results[0]["status"] == "failed" and "already exists" in results[0]["error"]
    assert (bad.run_dir / "error.txt").is_file()
    assert results[1]["status"] == "completed" and results[1]["total_steps"] == 200


def test_runs_sharing_agent_env_and_seed_each_keep_their_result(tmp_path):
    """Results are kept per run directory: two runs of one agent, env and seed with other configs (as tune's
    held-out check builds: the best entry and the default) each get their own record, not one twice."""
    def one_task(steps: int, out: str) -> compare.Task:
        args = compare.build_parser().parse_args(["--agents", "dqn", "--env", "CartPole-v1", "--seeds", "1",
                                                  "--steps", str(steps), "--set", "eval_episodes=2", "--out", out])
        return compare.plan(args)[0][0]

    task, longer = one_task(200, str(tmp_path / "cmp")), one_task(300, str(tmp_path / "other"))
    out = tmp_path / "cmp"
    assert task.label == longer.label and task.run_dir != longer.run_dir
    runs = compare.run_all([task, longer], out, workers=2, progress=False)
    assert [(r["run_dir"], r["total_steps"]) for r in runs] == [(str(task.run_dir), 200), (str(longer.run_dir), 300)]
    with pytest.raises(UserError, match="two runs of the comparison would write to one run directory"):
        compare.run_all([task, task], tmp_path / "again", workers=1, progress=False)


def test_an_env_or_seed_listed_twice_is_refused(tmp_path, capsys):
    """Twice the same env (or seed, through the Python API) would be two runs in one run directory."""
    assert "--env lists an env twice: CartPole-v1,CartPole-v1" in _one_line(
        ["--agents", "dqn", "--env", "CartPole-v1,CartPole-v1", "--steps", "100", "--seeds", "1",
         "--out", str(tmp_path / "out")], capsys)
    with pytest.raises(UserError, match="--seeds lists a seed twice: 3,3"):
        rlagents.compare(["dqn"], "CartPole-v1", seeds=[3, 3], steps=100, out=tmp_path / "api")
    assert not (tmp_path / "out").exists() and not (tmp_path / "api").exists()


def test_small_local_compare(tmp_path):
    """Two agents (ours and the SB3 reference) x two seeds, through worker processes, into one folder."""
    out = tmp_path / "cmp"
    code = compare.main(["--agents", "dqn,sb3-dqn", "--env", "CartPole-v1", "--seeds", "2", "--steps", "400",
                         "--set", "eval_every=200", "--set", "eval_episodes=2", "--set", "sb3-dqn.learning_starts=100",
                         "--workers", "2", "--out", str(out), "--no-progress"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())["runs"]
    assert [(r["agent"], r["seed"], r["status"]) for r in results] == [
        ("dqn", 0, "completed"), ("dqn", 1, "completed"), ("sb3-dqn", 0, "completed"), ("sb3-dqn", 1, "completed")]
    assert all([e["step"] for e in r["evaluations"]] == [200, 400] for r in results)  # the same schedule
    assert results[2]["costs"]["update_ms"] > 0
    for r in results:  # every run's TensorBoard logs under the one output folder
        assert list(Path(r["run_dir"]).glob("events.out.tfevents.*"))
        assert Path(r["run_dir"]).parent == out / "runs"
    text = (out / "report.md").read_text()
    assert "## CartPole-v1" in text and "| dqn | 2 |" in text and "| sb3-dqn | 2 |" in text
    assert "| dqn | sb3-dqn |" in text
    assert (out / "curves.png").is_file()


def test_a_variant_of_an_agent_is_its_own_row_with_its_own_keys(tmp_path, capsys):
    """`ppo@memoryless` is PPO under its own name, with `--set ppo@memoryless.KEY=VALUE` for it alone."""
    out = tmp_path / "cmp"
    code = compare.main(["--agents", "ppo,ppo@memoryless", "--env", "CartPole-v1", "--seeds", "1", "--steps", "256",
                         "--set", "eval_every=256", "--set", "eval_episodes=2", "--set", "n_envs=2",
                         "--set", "n_steps=64", "--set", "recurrent=gru", "--set", "recurrent_hidden=8",
                         "--set", "ppo@memoryless.recurrent=none", "--workers", "1", "--out", str(out),
                         "--no-progress"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())["runs"]
    assert [(r["agent"], r["status"]) for r in results] == [("ppo", "completed"), ("ppo@memoryless", "completed")]
    configs = [(Path(r["run_dir"]) / "config.yaml").read_text() for r in results]
    assert "recurrent: gru" in configs[0] and "recurrent: none" in configs[1]
    assert "| ppo@memoryless | 1 |" in (out / "report.md").read_text()
    assert compare.main(["--from", str(out / "runs"), "--out", str(tmp_path / "again")]) == 0  # from run folders
    assert "| ppo@memoryless | 1 |" in (tmp_path / "again" / "report.md").read_text()
    capsys.readouterr()
    assert "a variant is AGENT@NAME" in _one_line(["--agents", "ppo@", "--env", "CartPole-v1"], capsys)


def _one_line(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        compare.main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err[-500:]
    return err


@pytest.mark.parametrize("agents, env, message", [
    (",", "CartPole-v1", "--agents names no agent; valid agents: "),  # was exit 1 and a report of 0 runs
    (" , ,", "CartPole-v1", "names no agent"), ("dqn", ",", "--env names no env"),
    ("dqn,dqn", "CartPole-v1", "--agents lists an agent twice: dqn,dqn"),
])
def test_empty_agent_and_env_lists_are_refused(tmp_path, capsys, agents, env, message):
    assert message in _one_line(["--agents", agents, "--env", env, "--out", str(tmp_path / "out")], capsys)
    assert not (tmp_path / "out").exists()


def _with_summary(root: Path, change) -> Path:
    _write_runs(root)
    path = root / "CartPole-v1__good__s0" / "summary.json"
    record = json.loads(path.read_text())
    path.write_text(change(record) if callable(change) else change)
    return path


@pytest.mark.parametrize("change, message", [
    ("[" * 1000 + "]" * 1000, "nested more than 64 levels deep"),
    ('{"a": ' * 100_000 + "1" + "}" * 100_000, "nested more than 64 levels deep"),
    (lambda r: json.dumps({**r, "seed": "zero"}), "seed must be an integer, got 'zero'"),
    (lambda r: json.dumps({**r, "agent": ["dqn"]}), "agent must be a non-empty string, got ['dqn']"),
    (lambda r: json.dumps({**r, "eval_return_mean": "high"}), "eval_return_mean must be a number, got 'high'"),
    (lambda r: json.dumps({**r, "evaluations": [{"step": "1"}]}), "each evaluation must hold numbers"),
    (lambda r: json.dumps({**r, "evaluations": 3}), "evaluations must be a list, got 3"),
    (lambda r: json.dumps({**r, "costs": {"update_ms": None}}), "costs must map names to numbers"),
    (lambda r: json.dumps({**r, "solved_at_step": 1.5}), "solved_at_step must be an integer or null, got 1.5"),
    (lambda r: json.dumps([r]), "does not hold a JSON object"),
])
def test_hostile_summaries_in_from_are_one_line(tmp_path, capsys, change, message):
    _with_summary(tmp_path / "runs", change)
    err = _one_line(["--from", str(tmp_path / "runs"), "--out", str(tmp_path / "out")], capsys)
    assert message in err and len(err) < 600
    assert not (tmp_path / "out").exists()


def test_hostile_results_json_in_from_is_one_line(tmp_path, capsys):
    (tmp_path / "cmp").mkdir()
    for runs, message in ((5, "runs must be a list, got 5"), (["x"], "a run record must be a JSON object")):
        (tmp_path / "cmp" / "results.json").write_text(json.dumps({"runs": runs}))
        assert message in _one_line(["--from", str(tmp_path / "cmp"), "--out", str(tmp_path / "out")], capsys)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_final_return_is_listed_not_averaged(tmp_path, capsys, bad):
    def nan_run(record):
        record["eval_return_mean"] = bad
        record["evaluations"][0]["return_mean"] = bad
        return json.dumps(record)

    _with_summary(tmp_path / "runs", nan_run)
    out = tmp_path / "report"
    assert compare.main(["--from", str(tmp_path / "runs"), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert not [line for line in text.splitlines() if line.startswith("|") and ("nan" in line or "inf" in line)]
    # good: seeds 1 and 2 remain (finals 490 and 30)
    assert "| good | 2 (1 failed) | 260.0 [30.0, 490.0] | 260.0 ± 230.0 |" in text
    assert f"- good on CartPole-v1, seed 0: final evaluation return is {bad}, not a finite number" in text
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

"""`--backend ray` on a local Ray instance gives the same results as local worker processes for fixed seeds.

Ray is an optional extra (`pip install -e ".[ray]"`), so this module is skipped, saying so, without it.
Starting Ray costs several seconds, so there is one test with two tiny runs per backend.
"""

from __future__ import annotations

import json

import pytest

from rlagents import compare

pytest.importorskip("ray", reason="Ray is an optional extra: pip install -e '.[ray]'")


def test_ray_backend_matches_local(tmp_path):
    argv = ["--agents", "dqn", "--env", "CartPole-v1", "--seeds", "2", "--steps", "300", "--set", "eval_every=150",
            "--set", "eval_episodes=2", "--set", "learning_starts=100", "--workers", "2", "--no-progress"]
    # the local backend's worker function, run in this process for the same tasks (saves spawning workers)
    tasks, _ = compare.plan(compare.build_parser().parse_args(argv + ["--out", str(tmp_path / "local")]))
    local = [compare.run_task(t) for t in tasks]
    assert compare.main(argv + ["--backend", "ray", "--out", str(tmp_path / "ray")]) == 0
    ray_runs = json.loads((tmp_path / "ray" / "results.json").read_text())["runs"]

    def key(runs):
        return [(r["seed"], r["status"], [(e["step"], e["return_mean"]) for e in r["evaluations"]],
                 r["final_eval_returns"], r["episodes"]) for r in runs]

    assert key(ray_runs) == key(local)
    assert all(r["status"] == "completed" for r in ray_runs)
    assert (tmp_path / "ray" / "report.md").is_file() and (tmp_path / "ray" / "curves.png").is_file()


def test_unreachable_ray_address_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        compare.main(["--agents", "dqn", "--env", "CartPole-v1", "--seeds", "1", "--steps", "10", "--backend", "ray",
                      "--address", "127.0.0.1:1", "--out", str(tmp_path), "--no-progress"])
    assert exc.value.code == 2
    assert "no Ray cluster reachable" in capsys.readouterr().err

"""benchmarks/results_table.py: which pairs it finds, when a cached result counts, what the page says (no training)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import results_table as rt

SEEDS = [1000, 1001, 1002]
QLEARNING = """
default:
  steps: 1000
FrozenLake-v1:
  lr: 0.5
Taxi-v4:
  steps: 2000
"ALE/*":
  steps: 5
"""


@pytest.fixture
def configs(tmp_path: Path) -> Path:
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "qlearning.yaml").write_text(QLEARNING)
    (folder / "classify.yaml").write_text("default:\n  epochs: 1\n")
    (folder / "dqn.yaml").write_text("DigitLock-v0:\n  steps: 300\n")
    return folder


def cache_result(cache: Path, pair: rt.Pair, finals: list[float], key: str | None = None) -> None:
    cache.mkdir(exist_ok=True)
    record = {"agent": pair.agent, "env": pair.env, "key": key or pair.key, "steps": pair.steps, "seeds": SEEDS,
              "finals": {str(s): f for s, f in zip(SEEDS, finals)}, "failed": {}, "threshold": 0.7,
              "date": "2026-12-02 15:00 UTC", "load": "1.0 -> 2.0"}
    (cache / f"{pair.name}.json").write_text(json.dumps(record))


def test_every_env_entry_is_a_pair_but_patterns_and_the_classifier(configs: Path):
    found = {(p.agent, p.env): p for p in rt.pairs(configs, SEEDS)}
    assert set(found) == {("dqn", "DigitLock-v0"), ("qlearning", "FrozenLake-v1"), ("qlearning", "Taxi-v4")}
    assert found["qlearning", "FrozenLake-v1"].steps == 1000 and found["qlearning", "Taxi-v4"].steps == 2000
    assert "backbone" in found["dqn", "DigitLock-v0"].blocked
    with_backbone = {(p.agent, p.env): p for p in rt.pairs(configs, SEEDS, backbone="runs/classifier")}
    assert not with_backbone["dqn", "DigitLock-v0"].blocked
    assert with_backbone["dqn", "DigitLock-v0"].key != found["dqn", "DigitLock-v0"].key


def test_the_key_follows_the_pairs_own_config_and_seeds_only(configs: Path):
    before = {p.env: p.key for p in rt.pairs(configs, SEEDS)}
    (configs / "qlearning.yaml").write_text(QLEARNING.replace("lr: 0.5", "lr: 0.25"))
    after = {p.env: p.key for p in rt.pairs(configs, SEEDS)}
    assert after["FrozenLake-v1"] != before["FrozenLake-v1"]  # its entry changed: rerun
    assert after["Taxi-v4"] == before["Taxi-v4"]  # another entry changed: still cached
    assert {p.env: p.key for p in rt.pairs(configs, [1000, 1001])}["Taxi-v4"] != after["Taxi-v4"]
    (configs / "qlearning.yaml").write_text(QLEARNING.replace("steps: 1000", "steps: 1500"))
    assert {p.env: p.key for p in rt.pairs(configs, SEEDS)}["Taxi-v4"] == before["Taxi-v4"]  # overridden there
    assert {p.env: p.key for p in rt.pairs(configs, SEEDS)}["FrozenLake-v1"] != before["FrozenLake-v1"]


def test_a_rerun_skips_cached_pairs_and_the_page_lists_every_pair(configs: Path, tmp_path: Path, capsys):
    cache, page = tmp_path / "cache", tmp_path / "results.md"
    found = {p.env: p for p in rt.pairs(configs, SEEDS)}
    cache_result(cache, found["FrozenLake-v1"], [0.8, 0.6, 0.75])
    cache_result(cache, found["Taxi-v4"], [7.0, 8.0, 9.0], key="0" * 64)  # run on an older config
    args = ["--configs", str(configs), "--cache", str(cache), "--page", str(page), "--seeds", "1000-1002"]
    assert rt.main([*args, "--run", "--only", "qlearning:FrozenLake-v1"]) == 0
    assert "1 of 1 selected pairs cached; running 0" in capsys.readouterr().out
    text = page.read_text()
    assert "| qlearning | FrozenLake-v1 | 0.72 [0.60, 0.80] | 2/3 (≥ 0.7) | 1,000 | — | 2026-12-02 15:00 UTC, load 1.0–2.0 |" in text
    assert "qlearning × Taxi-v4: its config changed since its run of 2026-12-02 15:00 UTC" in text
    assert "dqn × DigitLock-v0: needs the classifier's pretrained backbone" in text
    assert "| qlearning | Taxi-v4 |" not in text


def test_rl_zoo_scores_are_matched_by_algorithm_family():
    assert rt.zoo_cell("sb3-dqn", "LunarLander-v3") == rt.zoo_cell("dqn", "LunarLander-v3") == \
        "154.4 ± 79.2 (dqn, 100k steps)"
    assert rt.zoo_cell("qlearning", "MountainCar-v0") == "—"


def test_a_recorded_config_names_what_changed_and_a_new_field_at_its_default_is_no_change(configs: Path):
    pair = {p.env: p for p in rt.pairs(configs, SEEDS)}["FrozenLake-v1"]
    old = dict(pair.values)
    del old["agent.gamma"]  # a field the agent gained after the run: at its default, the result still stands
    record = {"key": "0" * 64, "config": old}
    assert rt.config_changes(record, pair) == []
    old["agent.lr"] = 0.25
    assert rt.config_changes(record, pair) == ["lr: 0.25 -> 0.5"]
    moved = {p.env: p for p in rt.pairs(configs, SEEDS)}["FrozenLake-v1"]
    assert rt.config_changes({"key": "0" * 64}, moved) == ["config hash"]  # an older record: by key only

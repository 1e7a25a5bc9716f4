"""The README's "Your own environment" and "Python API" examples run as written, in a fresh folder."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end]


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))  # this checkout's rlagents, whatever is installed
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{shlex.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_your_own_environment_example(tmp_path: Path):
    text = section("Your own environment")
    (module,) = blocks(text, "python")
    (commands,) = blocks(text, "bash")
    (tmp_path / "mygrid.py").write_text(module)
    outputs = []
    for line in commands.splitlines():
        argv = shlex.split(line.split("#")[0])
        assert argv[:2] == ["python", "-m"]
        outputs.append(run([sys.executable, *argv[1:]], tmp_path).stdout)
    assert "dqn on mygrid:Line-v0 seed 0 (untuned config" in outputs[0]
    assert "dqn on mygrid:Line-v0 (final.json" in outputs[1]


def test_python_api_example(tmp_path: Path):
    (example,) = blocks(section("Python API"), "python")
    out = run([sys.executable, "-c", example], tmp_path).stdout
    assert out.splitlines()[-1] == "stopped completed"

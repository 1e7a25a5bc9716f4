"""The manual: it builds in strict mode, its marked code examples run, and its CLI tables match `--help`.

Convention for examples: a fenced `bash` or `python` block right after a `<!-- run -->` line (in README.md or
any page under docs/) is run by `test_marked_examples`, the blocks of one page in order in one fresh folder
(so a page can train a run and then evaluate it). A bash block holds `python -m …` commands, one a line. Keep
marked examples to a few seconds (small `--steps`); the README's "Your own environment" and "Python API"
sections are run by tests/test_readme.py.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
MARKED = re.compile(r"^<!-- run -->\n```(bash|python)\n(.*?)^```", flags=re.DOTALL | re.MULTILINE)
COMMANDS = ("train", "evaluate", "compare", "classify", "export", "tune")


def run(cmd: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), NO_MKDOCS_2_WARNING="1")  # this checkout's rlagents
    return subprocess.run(cmd, check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_manual_builds_in_strict_mode(tmp_path: Path):
    proc = run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")], ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    api = (tmp_path / "site" / "reference" / "python" / "index.html").read_text()
    assert 'id="rlagents.api.train"' in api  # the reference was generated from the docstrings
    dqn = (tmp_path / "site" / "agents" / "dqn" / "index.html").read_text()
    assert 'href="../../source/rlagents/numpy_mlp.py/"' in dqn  # a source link, rewritten by the hook


@pytest.mark.parametrize("target, fails", [("../missing.py", True), ("../pyproject.toml", False)])
def test_a_source_link_to_a_missing_file_fails_the_build(tmp_path: Path, target: str, fails: bool):
    project = tmp_path / "project"
    (project / "docs").mkdir(parents=True)
    (project / "pyproject.toml").write_text("")
    (project / "docs" / "index.md").write_text(f"# Home\n\nSee [the file]({target}).\n")
    (project / "mkdocs.yml").write_text(
        f"site_name: t\nstrict: true\nhooks: [{ROOT / 'docs' / 'scripts' / 'source_links.py'}]\n")
    proc = run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")], project)
    assert (proc.returncode != 0) == fails, proc.stderr[-2000:]
    if fails:
        assert "missing.py does not exist" in proc.stderr


def marked_pages() -> list[Path]:
    pages = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
    return [p for p in pages if MARKED.search(p.read_text())]


def test_some_examples_are_marked():
    assert DOCS / "getting-started.md" in marked_pages()


@pytest.mark.parametrize("page", marked_pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_marked_examples(page: Path, tmp_path: Path):
    for language, code in MARKED.findall(page.read_text()):
        if language == "python":
            commands = [[sys.executable, "-c", code]]
        else:
            commands = []
            for line in filter(None, (line.split("#")[0].strip() for line in code.splitlines())):
                argv = shlex.split(line)
                assert argv[:2] == ["python", "-m"], f"{page.name}: a run block holds python -m commands: {line}"
                commands.append([sys.executable, *argv[1:]])
        for cmd in commands:
            proc = run(cmd, tmp_path)
            assert proc.returncode == 0, f"{page.name}: {shlex.join(cmd)[:300]}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"


def help_options(command: str) -> set[str]:
    """Long options of `python -m rlagents.<command> --help`, from its option lines."""
    out = run([sys.executable, "-m", f"rlagents.{command}", "--help"], ROOT).stdout
    lines = [re.split(r"\s{2,}", line.strip())[0] for line in out.splitlines() if re.match(r"^  -", line)]
    return set(re.findall(r"--[\w-]+", " ".join(lines))) - {"--help"}


def table_options(command: str) -> set[str]:
    """Long options in the first column of the tables of docs/cli.md's section on `rlagents.<command>`."""
    text = (DOCS / "cli.md").read_text()
    start = text.index(f"## `python -m rlagents.{command}")
    end = text.find("\n## ", start + 1)
    cells = re.findall(r"^\| (.*?) \|", text[start:end], flags=re.MULTILINE)
    return set(re.findall(r"--[a-z][\w-]*", " ".join(cells)))


@pytest.mark.parametrize("command", COMMANDS)
def test_cli_tables_match_help(command: str):
    assert table_options(command) == help_options(command)

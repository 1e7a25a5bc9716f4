"""MkDocs hook: links from the manual to the repository's source files (`../../rlagents/loop.py`).

Such links leave `docs/`, so MkDocs cannot check or serve them. This hook resolves each one against the
repository, fails the build when the file or folder does not exist (so a renamed module breaks the build, not
the reader), and rewrites the link to a generated page under `source/` that shows the file (a folder's page
lists its files). The generated pages are kept out of the search index and the navigation.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files, InclusionLevel

# [text](target) and [text](target "title"); images and external links are skipped in `_rewrite`
LINK = re.compile(r"(\]\()([^)\s]+)((?:\s+\"[^\"]*\")?\))")
FENCE = re.compile(r"^(```|~~~).*?^\1", flags=re.DOTALL | re.MULTILINE)
LANGUAGES = {".py": "python", ".yaml": "yaml", ".yml": "yaml", ".toml": "toml", ".md": "markdown", ".json": "json"}
SKIP_DIRS = {"__pycache__", ".git", ".venv", "runs", "site"}

_wanted: dict[str, Path] = {}  # repository-relative path -> absolute path, filled while reading pages


def _repo_root(config: Any) -> Path:
    return Path(config["docs_dir"]).resolve().parent


def _page_for(rel: str) -> str:
    """The generated page (docs-relative) that shows repository path `rel`."""
    return f"source/{rel}.md"


def _rewrite(markdown: str, page_src: str, config: Any) -> str:
    docs_dir = Path(config["docs_dir"]).resolve()
    root = _repo_root(config)

    def replace(match: re.Match) -> str:
        target = match.group(2)
        if re.match(r"^[a-z]+:|^#|^/", target):
            return match.group(0)
        path, _, anchor = target.partition("#")
        absolute = (docs_dir / posixpath.dirname(page_src) / path).resolve()
        if absolute.is_relative_to(docs_dir) and not absolute.is_relative_to(docs_dir / "scripts"):
            return match.group(0)  # inside the manual: MkDocs checks it (docs/scripts/ is code, kept out of it)
        if not absolute.is_relative_to(root):
            raise PluginError(f"{page_src}: link {target!r} points outside the repository")
        if not absolute.exists():
            raise PluginError(f"{page_src}: link {target!r}: {absolute.relative_to(root)} does not exist")
        rel = absolute.relative_to(root).as_posix()
        _register(rel, absolute)
        new = posixpath.relpath(_page_for(rel), posixpath.dirname(page_src) or ".")
        return f"{match.group(1)}{new}{'#' + anchor if anchor else ''}{match.group(3)}"

    # code blocks are left as written: a link-like text in a fence is not a link
    out, last = [], 0
    for fence in FENCE.finditer(markdown):
        out.append(LINK.sub(replace, markdown[last:fence.start()]))
        out.append(fence.group(0))
        last = fence.end()
    out.append(LINK.sub(replace, markdown[last:]))
    return "".join(out)


def _register(rel: str, absolute: Path) -> None:
    _wanted[rel] = absolute
    if absolute.is_dir():
        for child in _children(absolute):
            if child.is_file():  # a subfolder is named on the folder's page, not shown
                _wanted.setdefault(f"{rel}/{child.name}", child)


def _children(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name not in SKIP_DIRS and not p.name.startswith("."))


def _source_page(rel: str, absolute: Path) -> str:
    header = f"---\nsearch:\n  exclude: true\n---\n\n# `{rel}`\n\n"
    if absolute.is_dir():
        items = [f"- [`{c.name}`]({absolute.name}/{c.name}.md)"
                 for c in _children(absolute) if c.is_file()]
        items += [f"- `{c.name}/`" for c in _children(absolute) if c.is_dir()]
        return header + "A folder of the repository.\n\n" + "\n".join(items) + "\n"
    text = absolute.read_text(errors="replace")
    fence = "````" if "```" in text else "```"
    return f"{header}{fence}{LANGUAGES.get(absolute.suffix, 'text')}\n{text}\n{fence}\n"


def on_config(config: Any) -> Any:
    _wanted.clear()
    return config


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    if page.file.src_uri.startswith("source/"):
        return markdown
    return _rewrite(markdown, page.file.src_uri, config)


def on_files(files: Files, config: Any) -> Files:
    """Pre-read every page for source links, so their generated pages exist before the pages are built."""
    docs_dir = Path(config["docs_dir"])
    for file in list(files):
        if file.src_uri.endswith(".md") and not file.generated_by:
            _rewrite((docs_dir / file.src_uri).read_text(), file.src_uri, config)
    for rel, absolute in sorted(_wanted.items()):
        files.append(File.generated(config, _page_for(rel), content=_source_page(rel, absolute),
                                   inclusion=InclusionLevel.NOT_IN_NAV))
    return files

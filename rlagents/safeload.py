"""Bounded readers for the YAML and JSON files rlagents reads: configs, checkpoints' JSON, summaries.

A hostile file must end in a one-line error, not a traceback, a hang or a huge message. So every reader
bounds what it parses: the file's size, how deeply it nests, how far YAML aliases expand (a few hundred bytes
of nested anchors, "billion laughs", would otherwise expand to billions of nodes) and how many characters a
number may have (Python refuses to parse integers of more than 4,300 digits, with a ValueError). A YAML
mapping that repeats a key is an error, not last-wins, and so is a JSON object that does. Error messages
echo values through `shown`, which cuts them short.
"""

from __future__ import annotations

import json
import reprlib
import stat
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from rlagents.errors import ConfigError, UserError

MAX_CONFIG_BYTES = 1 << 20  # a config is a few KB; 1 MiB of YAML takes PyYAML about 10 s
MAX_JSON_BYTES = 256 << 20  # a checkpoint's JSON holds counters and episode records, not tensors
MAX_DEPTH = 64  # nesting levels (configs use 2-3, checkpoints about 10)
MAX_YAML_NODES = 100_000  # nodes of a YAML document once every alias is expanded
MAX_NUMBER_CHARS = 100  # characters of one number (a 128-bit RNG state has 39 digits)
ECHO_CHARS = 80  # characters of a value an error message repeats

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = _repr.maxlong = ECHO_CHARS
_repr.maxlevel, _repr.maxlist, _repr.maxtuple, _repr.maxdict = 3, 6, 6, 6


def shown(value: Any, limit: int = ECHO_CHARS) -> str:
    """`repr(value)` for an error message, cut to about `limit` characters however large `value` is."""
    return clip(_repr.repr(value), limit)


def clip(text: str, limit: int = 160) -> str:
    """`text` cut to at most `limit` characters (an ellipsis marks the cut)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------- files


def read_bounded(path: Path, limit: int, what: str, error: type[UserError] = UserError) -> bytes:
    """The bytes of the regular file `path`, refusing a missing, special (FIFO, device) or oversized one."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the name
        raise error(f"cannot read {what} {clip(str(path))}: {exc.strerror if isinstance(exc, OSError) else exc}"
                    ) from None
    if stat.S_ISDIR(info.st_mode):
        raise error(f"{what} {path} is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{what} {path} is not a regular file (a device, FIFO or socket)")
    if info.st_size > limit:
        raise error(f"{what} {path} is {info.st_size:,} bytes; a {what} may have at most {limit:,} bytes")
    try:
        with open(path, "rb") as fh:
            data = fh.read(info.st_size + 1)  # read(n) allocates n bytes: never more than the file's size
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > info.st_size:
        raise error(f"{what} {path} grew while it was read (is something writing it?)")
    return data


def _decode(data: bytes, source: str, error: type[UserError]) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{source} is not UTF-8 text (byte {exc.start})") from None


# ---------------------------------------------------------------- JSON


def _bounded_int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise ValueError(f"a number of {len(text):,} characters (at most {MAX_NUMBER_CHARS})")
    return int(text)


def _bounded_float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise ValueError(f"a number of {len(text):,} characters (at most {MAX_NUMBER_CHARS})")
    return float(text)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise ValueError(f"duplicate key {shown(duplicate)}")
    return out


def depth_of(value: Any, limit: int = MAX_DEPTH) -> int:
    """Nesting depth of nested lists and dicts, counted without recursion; stops counting past `limit`."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list, tuple)):
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def load_json(text: str | bytes, source: str, error: type[UserError] = UserError) -> Any:
    """Parse JSON text, bounding nesting and number length and refusing duplicate keys."""
    if isinstance(text, bytes):
        text = _decode(text, source, error)
    try:
        data = json.loads(text, parse_int=_bounded_int, parse_float=_bounded_float, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise error(f"{source} is not valid JSON: nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as exc:  # JSONDecodeError included
        raise error(f"{source} is not valid JSON: {clip(str(exc))}") from None
    if depth_of(data) > MAX_DEPTH:
        raise error(f"{source} is not valid JSON: nested more than {MAX_DEPTH} levels deep")
    return data


def read_json(path: Path, what: str, error: type[UserError] = UserError, limit: int = MAX_JSON_BYTES) -> Any:
    """Read and parse a JSON file within the bounds above; `what` names it in messages."""
    return load_json(read_bounded(path, limit, what, error), f"{what} {path}", error)


# ---------------------------------------------------------------- YAML


class BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader (no tags that build Python objects) with bounded nesting, alias expansion and
    number length, and an error for a key repeated in one mapping."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.YAMLError(f"nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> Node:
        node = super().compose_document()
        _check_expansion(node)
        return node

    def construct_mapping(self, node: Node, deep: bool = False) -> dict:
        if isinstance(node, MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *base` merges may be overridden by the mapping's own keys
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # unhashable: the base constructor says so
                    continue
                if duplicate:
                    raise ConstructorError("while reading a mapping", node.start_mark,
                                           f"found duplicate key {shown(key)}", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: ScalarNode) -> int:
        _check_number(node)
        return super().construct_yaml_int(node)

    def construct_yaml_float(self, node: ScalarNode) -> float:
        _check_number(node)
        return super().construct_yaml_float(node)


BoundedLoader.add_constructor("tag:yaml.org,2002:int", BoundedLoader.construct_yaml_int)
BoundedLoader.add_constructor("tag:yaml.org,2002:float", BoundedLoader.construct_yaml_float)


def _check_number(node: ScalarNode) -> None:
    if len(node.value) > MAX_NUMBER_CHARS:
        raise ConstructorError(None, None, f"found a number of {len(node.value):,} characters (at most "
                               f"{MAX_NUMBER_CHARS})", node.start_mark)


def _check_expansion(root: Node | None) -> None:
    """Refuse a node graph that expands (aliases followed) to more than MAX_YAML_NODES nodes, nests deeper
    than MAX_DEPTH, or refers to itself. Sizes are memoised per node, so the walk is linear in the file."""
    if root is None:
        return
    done: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded nodes, expanded depth)
    open_: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in done:
            continue
        children = _children(node)
        if not children_done:
            if key in open_:
                raise yaml.YAMLError("an alias refers to the node that contains it")
            open_.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in done)
            continue
        if any(id(child) not in done for child in children):  # a child was still open: a cycle
            raise yaml.YAMLError("an alias refers to the node that contains it")
        size = 1 + sum(done[id(child)][0] for child in children)
        depth = 1 + max((done[id(child)][1] for child in children), default=0)
        if size > MAX_YAML_NODES:
            raise yaml.YAMLError(f"aliases expand it to more than {MAX_YAML_NODES:,} nodes")
        if depth > MAX_DEPTH:
            raise yaml.YAMLError(f"aliases nest it more than {MAX_DEPTH} levels deep")
        open_.discard(key)
        done[key] = (size, depth)


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _yaml_problem(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return clip(str(problem)) + where


def load_yaml(text: str | bytes, source: str, error: type[UserError] = ConfigError) -> Any:
    """Parse one YAML document with `BoundedLoader`."""
    if isinstance(text, bytes):
        text = _decode(text, source, error)
    try:
        loader = BoundedLoader(text)  # its reader already refuses control characters
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise error(f"{source} is not valid YAML: {_yaml_problem(exc)}") from None
    except RecursionError:  # a guard: compose_node's depth bound should stop it first
        raise error(f"{source} is not valid YAML: nested too deeply") from None


def read_yaml(path: Path, what: str = "config file", error: type[UserError] = ConfigError,
              limit: int = MAX_CONFIG_BYTES) -> Any:
    """Read and parse a YAML file within the bounds above."""
    return load_yaml(read_bounded(path, limit, what, error), f"{what} {path}", error)

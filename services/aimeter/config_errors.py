"""Config errors as an operator reads them: every problem at once, each with its file:line.

pydantic reports paths in its own terms (union branches such as ``list[GpuCost]`` inside the
path, one error per branch tried) and stops at field errors before whole-file checks run. This
module turns its errors into one line per problem, ``file:line: dotted.path: what is wrong``,
with the line taken from the YAML node the path points at, and adds the cross-reference checks
(a model naming an unknown backend) from the raw YAML, so they are reported in the same pass.
Pure: text and errors in, lines out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

Path = tuple[str | int, ...]
_TYPE_TAG = re.compile(r"^(list|dict|tuple|set)\[.*\]$|^[A-Z][A-Za-z]+$|^function-(after|before|wrap|plain)\[.*\]$")
_MESSAGES = {
    "missing": "is required but missing",
    "extra_forbidden": "is not a known field (check its spelling)",
}


def node_lines(text: str) -> dict[Path, int]:
    """1-based line of every mapping value and sequence item in the YAML, by path."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return {}
    lines: dict[Path, int] = {}

    def walk(node: yaml.Node, path: Path) -> None:
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                walk(value, (*path, str(key.value)))
                lines[(*path, str(key.value))] = key.start_mark.line + 1  # the key's line, not its value's
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, (*path, index))

    if root is not None:
        walk(root, ())
    return lines


def describe(errors: Sequence[Mapping[str, Any]], data: object, text: str, source: str) -> list[str]:
    """One line per distinct problem, in file order, without pydantic's union-branch duplicates."""
    lines = node_lines(text)
    seen: dict[tuple[Path, str], int] = {}
    for error in errors:
        path, ruled_out = _split_tags(tuple(error["loc"]), data)
        if ruled_out:
            continue
        message = _MESSAGES.get(error["type"], str(error["msg"]).removeprefix("Value error, "))
        seen.setdefault((path, message), _line(lines, path))
    return [f"{source}:{line}: {_dotted(path)}: {message}" for (path, message), line in
            sorted(seen.items(), key=lambda item: (item[1], _dotted(item[0][0])))]


def route_problems(data: object) -> list[dict[str, Any]]:
    """Models that name a backend the file does not declare, as pydantic-shaped errors."""
    if not isinstance(data, Mapping):
        return []
    backends, models = data.get("backends"), data.get("models")
    if not isinstance(backends, Mapping) or not isinstance(models, Mapping):
        return []
    problems = []
    for name, route in models.items():
        backend = route.get("backend") if isinstance(route, Mapping) else None
        if isinstance(backend, str) and backend not in backends:
            known = ", ".join(sorted(map(str, backends))) or "none"
            problems.append({"loc": ("models", str(name), "backend"), "type": "unknown_backend",
                             "msg": f"unknown backend {backend!r} (declared: {known})"})
    return problems


def _split_tags(loc: Path, data: object) -> tuple[Path, bool]:
    """The path in the file without pydantic's union-branch tags, and whether the error came from a
    branch the value's shape rules out (a mapping tried as ``list[...]``, or a list as a model).

    A tag is a part that names a type (``GpuCost``, ``list[GpuCost]``) where the data has no such key.
    """
    path: list[str | int] = []
    value, ruled_out = data, False
    for part in loc:
        if isinstance(part, str) and _TYPE_TAG.match(part) and not (isinstance(value, Mapping) and part in value):
            wants_list = part.startswith(("list[", "tuple[", "set["))
            ruled_out = ruled_out or wants_list != isinstance(value, list)
            continue
        path.append(part)
        if isinstance(value, Mapping):
            value = value.get(part)
        elif isinstance(value, list) and isinstance(part, int) and part < len(value):
            value = value[part]
        else:
            value = None
    return tuple(path), ruled_out


def _line(lines: Mapping[Path, int], path: Path) -> int:
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return 1


def _dotted(path: Path) -> str:
    return ".".join(str(part) for part in path) or "<file>"

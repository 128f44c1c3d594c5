"""Load the price overrides file and report *every* problem with its line. Parsing is pure (text in).

The YAML is composed into nodes first (which keep their line marks), so each validation error
can point at the line to fix; numbers are read as exact Decimals (``2.50`` never becomes a
float), and duplicate keys, which YAML would silently collapse, are errors.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from aimeter.config import GatewayConfig
from aimeter.pricer.overrides import EMPTY, Alias, Dated, Discount, Entry, Overrides, PriceRule
from aimeter.pricer.pricebook import PriceBook
from aimeter.resources import data_path

DEFAULT_OVERRIDES = data_path("schemas", "price_overrides.yaml")
SECTIONS: dict[str, type[Entry]] = {"aliases": Alias, "prices": PriceRule, "discounts": Discount, "batch": Discount}
TOP_KEYS = {"version", *SECTIONS}
Path_ = tuple[str | int, ...]


class OverridesError(ValueError):
    """The overrides file is invalid; the message has one line per problem, each with its line number."""


class _DecimalLoader(yaml.SafeLoader):
    """SafeLoader that reads YAML floats as the exact Decimal they spell."""


def _decimal(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Decimal | str:
    text = str(loader.construct_scalar(node)).replace("_", "")
    try:
        return Decimal(text)
    except InvalidOperation:
        return text  # .inf, .nan: left as text so validation names the line


_DecimalLoader.add_constructor("tag:yaml.org,2002:float", _decimal)


def _lines(node: yaml.Node, path: Path_, out: dict[Path_, int], problems: list[tuple[int, str]]) -> None:
    """Record the line of every path in the document; report duplicate keys."""
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key, line = str(key_node.value), key_node.start_mark.line + 1
            if key in seen:
                problems.append((line, f"{_dotted((*path, key))}: duplicate key (first on line {seen[key]})"))
                continue
            seen[key] = line
            out[(*path, key)] = line
            _lines(value_node, (*path, key), out, problems)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _lines(item, (*path, index), out, problems)


def _dotted(path: Path_) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "<root>"


def _line_of(path: Path_, lines: dict[Path_, int]) -> int:
    """The line of the deepest part of ``path`` the file has (a missing key points at its entry)."""
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return 1


def _validation_problems(exc: ValidationError, base: Path_, lines: dict[Path_, int]) -> Iterator[tuple[int, str]]:
    for err in exc.errors():
        loc = (*base, *(p for p in err["loc"] if isinstance(p, int) or not str(p).startswith(("function-", "union"))))
        yield _line_of(loc, lines), f"{_dotted(loc)}: {err['msg']}"


def _section(name: str, items: Any, lines: dict[Path_, int], problems: list[tuple[int, str]]) -> list[Entry]:
    if not isinstance(items, list):
        problems.append((_line_of((name,), lines), f"{name}: must be a list of entries"))
        return []
    entries: list[Entry] = []
    for index, item in enumerate(items):
        try:
            entry = SECTIONS[name].model_validate(item)
        except ValidationError as exc:
            problems.extend(_validation_problems(exc, (name, index), lines))
            continue
        entries.append(entry.at_line(_line_of((name, index), lines)))
    return entries


def _overlaps(name: str, entries: list[Entry]) -> Iterator[tuple[int, str]]:
    """Two dated entries for the same provider and model must not be in force at the same time."""
    dated = [e for e in entries if isinstance(e, Dated)]
    for i, first in enumerate(dated):
        for second in dated[i + 1:]:
            same = (first.provider.lower(), first.model) == (second.provider.lower(), second.model)
            if same and first.overlaps(second):
                yield second.line, (f"{name}: entry for {second.provider}/{second.model or '*'} overlaps the one on "
                                    f"line {first.line}; give them effective dates that do not overlap")


def _document(text: str) -> tuple[Any, dict[Path_, int], list[tuple[int, str]]]:
    loader = _DecimalLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return {}, {}, []
        lines: dict[Path_, int] = {}
        problems: list[tuple[int, str]] = []
        _lines(node, (), lines, problems)
        return loader.construct_document(node), lines, problems
    finally:
        loader.dispose()


def parse_overrides(text: str, source: str = "<overrides>") -> Overrides:
    """Validate the file's text; raise one OverridesError listing every problem as ``source:line: …``."""
    try:
        data, lines, problems = _document(text)
    except yaml.MarkedYAMLError as exc:
        line = (exc.problem_mark.line + 1) if exc.problem_mark else 1
        raise OverridesError(f"{source}:{line}: not valid YAML: {exc.problem}") from None
    if not isinstance(data, dict):
        raise OverridesError(f"{source}:1: the file must be a mapping with version, aliases, prices, discounts, batch")
    problems += [(lines[(k,)], f"{k}: unknown key (expected one of {', '.join(sorted(TOP_KEYS))})")
                 for k in data if k not in TOP_KEYS]
    sections: dict[str, Any] = {name: _section(name, data[name] or [], lines, problems)
                                for name in SECTIONS if name in data}
    for name, entries in sections.items():
        problems.extend(_overlaps(name, entries))
    version = data.get("version", "none")
    if isinstance(version, dict | list) or str(version) == "":
        problems.append((_line_of(("version",), lines), "version: must be a non-empty label, e.g. \"2026-11-01\""))
    if problems:
        listed = "\n  ".join(f"{source}:{line}: {message}" for line, message in sorted(problems))
        raise OverridesError(f"invalid price overrides ({len(problems)} problems):\n  {listed}")
    built = Overrides.model_construct(version=str(version), **sections)  # every entry is validated above
    return built.with_hash(hashlib.sha256(text.encode("utf-8")).hexdigest())


def load_overrides(path: Path) -> Overrides:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise OverridesError(f"cannot read price overrides {path}: {exc.strerror}") from None
    return parse_overrides(text, str(path))


def load_price_book(config: GatewayConfig) -> PriceBook:
    """The price book a process prices with: the config's overrides file, else the one shipped in schemas/."""
    path = config.price_overrides
    if path is None and DEFAULT_OVERRIDES.exists():
        path = DEFAULT_OVERRIDES
    return PriceBook(config, load_overrides(path) if path is not None else EMPTY)

"""The query endpoint's allow-lists, applied to what the engine's own parser says a query is.

The endpoint asks the engine to parse each query (``formatQuery`` refuses a second statement,
``EXPLAIN AST`` prints the tree) and checks that tree here: the statement kind, every function
it calls, and every output format it names. Deciding on the engine's parse, not on our own
reading of the text, means a comment or quoting trick cannot make the two disagree. What the
dump does not label is left to ``readonly`` (the lexer).

It is pure: it reads a dump string and returns or raises; the engine calls live in
``query_server``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from aimeter.store.readonly import NotAReadStatementError, ReadOnlyViolationError, SqlRejectedError

# Root node names of EXPLAIN AST for statements that only read. Everything else (INSERT, ALTER,
# KILL, USE, SYSTEM, SHOW GRANTS/USERS/ACCESS, PARALLEL WITH, CHECK, ...) is refused.
READ_KINDS = frozenset(
    {
        "SelectWithUnionQuery", "SelectIntersectExceptQuery", "ShowTables", "ShowColumns", "ShowIndexes",
        "ShowCreateTableQuery", "ShowCreateDatabaseQuery", "ShowCreateViewQuery", "ShowCreateDictionaryQuery",
        "ShowProcesslistQuery", "ShowFunctions", "ShowEngineQuery", "ShowSetting", "DescribeQuery",
        "ExistsTableQuery", "ExistsDatabaseQuery", "ExistsDictionaryQuery", "ExistsViewQuery", "Explain",
    }
)  # fmt: skip
# Table functions that only compute or read this engine's own tables.
SAFE_TABLE_FUNCTIONS = frozenset(
    {
        "numbers", "numbers_mt", "zeros", "zeros_mt", "generateseries", "generate_series", "primes",
        "values", "null", "view", "viewifpermitted", "merge", "generaterandom", "mergetreeindex",
        "mergetreeprojection",
    }
)  # fmt: skip
# Functions (table or scalar) that read files, reach the network or other processes, or format
# rows through a schema or template file. The engine's own list of table functions is added at
# start-up (see denied_functions), so a table function a future chDB adds is refused until
# someone decides it is safe; this static list keeps the gate closed even without it.
ALWAYS_DENIED_FUNCTIONS = frozenset(
    {
        "file", "filecluster", "filesystem", "url", "urlcluster", "s3", "s3cluster", "gcs", "oss",
        "cosn", "azureblobstorage", "azureblobstoragecluster", "hdfs", "hdfscluster", "remote",
        "remotesecure", "cluster", "clusterallreplicas", "executable", "executablepool", "mysql",
        "postgresql", "mongodb", "redis", "sqlite", "jdbc", "odbc", "input", "python", "format",
        "arrowstream", "bigquery", "ytsaurus", "catboostevaluate", "formatrow", "formatrownonewline",
        "naivebayesclassifier", "viewexplain",
    }
)  # fmt: skip
# Output formats a client may ask for: each one serialises rows by itself. Left out are the
# formats that take a schema or template from a file (Protobuf*, CapnProto, Template*), or
# their shape from settings (CustomSeparated*, Regexp, Form), and the input-only ones.
OUTPUT_FORMATS = frozenset(
    name.lower()
    for name in (
        "TabSeparated", "TabSeparatedRaw", "TabSeparatedWithNames", "TabSeparatedWithNamesAndTypes",
        "TabSeparatedRawWithNames", "TabSeparatedRawWithNamesAndTypes", "TSV", "TSVRaw", "TSVWithNames",
        "TSVWithNamesAndTypes", "TSVRawWithNames", "TSVRawWithNamesAndTypes", "CSV", "CSVWithNames",
        "CSVWithNamesAndTypes", "JSON", "JSONStrings", "JSONCompact", "JSONCompactStrings", "JSONEachRow",
        "JSONEachRowWithProgress", "JSONStringsEachRow", "JSONStringsEachRowWithProgress", "JSONCompactEachRow",
        "JSONCompactEachRowWithNames", "JSONCompactEachRowWithNamesAndTypes", "JSONCompactStringsEachRow",
        "JSONCompactStringsEachRowWithNames", "JSONCompactStringsEachRowWithNamesAndTypes", "JSONColumns",
        "JSONColumnsWithMetadata", "JSONCompactColumns", "JSONObjectEachRow", "JSONLines", "NDJSON", "Native",
        "RowBinary", "RowBinaryWithNames", "RowBinaryWithNamesAndTypes", "Values", "Vertical", "Pretty",
        "PrettyCompact", "PrettyCompactMonoBlock", "PrettyNoEscapes", "PrettyCompactNoEscapes", "PrettySpace",
        "PrettySpaceNoEscapes", "Markdown", "XML", "Null", "Parquet", "Arrow", "ArrowStream", "ORC",
        "LineAsString", "RawBLOB", "MsgPack", "SQLInsert",
    )
)  # fmt: skip
_NODE = re.compile(r"( *)(\S+)(?: (\S+))?")


class FormatNotAllowedError(SqlRejectedError):
    """The client asked for an output format outside the allow-list."""

    code = 73
    code_name = "UNKNOWN_FORMAT"
    headline = "Format not accepted on this endpoint"


@dataclass(frozen=True)
class Node:
    """One line of an EXPLAIN AST dump: its depth, its node type and the word after it."""

    depth: int
    kind: str
    name: str


def denied_functions(engine_table_functions: Iterable[str]) -> frozenset[str]:
    """Every table function the engine has except the known-safe ones, plus the static list."""
    engine = {name.lower() for name in engine_table_functions}
    return frozenset(engine - SAFE_TABLE_FUNCTIONS) | ALWAYS_DENIED_FUNCTIONS


def parse_dump(dump: str) -> list[Node]:
    """The nodes of an EXPLAIN AST dump.

    A quoted alias may hold a newline and so add lines of its own; it can never remove one, so
    a check that refuses on any matching line can be fooled into refusing, never into accepting.
    """
    nodes = []
    for line in dump.splitlines():
        match = _NODE.match(line)
        if match:
            nodes.append(Node(len(match.group(1)), match.group(2), match.group(3) or ""))
    return nodes


def check_tree(dump: str, denied: frozenset[str], denied_formats: frozenset[str]) -> None:
    """Refuse a parse tree that is not a read, calls a denied function or names a denied format."""
    nodes = parse_dump(dump)
    if not nodes:
        raise ReadOnlyViolationError("the engine returned no parse tree for this query")
    _check_kind(nodes)
    for node in nodes:
        if node.kind == "Function" and node.name.lower() in denied:
            raise ReadOnlyViolationError(f"function {node.name}() reaches outside the database")
        if node.kind == "Identifier" and node.depth <= 1 and node.name.lower() in denied_formats:
            raise FormatNotAllowedError(f"format {node.name} {_formats_hint()}")


def check_output_format(name: str) -> None:
    if name.lower() not in OUTPUT_FORMATS:
        raise FormatNotAllowedError(f"format {name!r} {_formats_hint()}")


def _formats_hint() -> str:
    return ("is not accepted on this endpoint (formats that read schema or template files are not); "
            "use e.g. JSON, TSV, CSV, Native, Parquet")


def _check_kind(nodes: list[Node]) -> None:
    """The root must be a read; an EXPLAIN's subject must be one too."""
    root = nodes[0]
    if root.kind not in READ_KINDS:
        raise NotAReadStatementError(
            f"only reads (SELECT, SHOW, DESCRIBE, EXISTS, EXPLAIN) are allowed, got {root.kind}")
    if root.kind == "Explain":
        subjects = [node for node in nodes if node.depth == 1 and node.kind not in ("Set", "Identifier")]
        if not subjects or any(node.kind not in READ_KINDS for node in subjects):
            raise NotAReadStatementError("EXPLAIN is allowed only of a read")

"""Read-only gate for SQL that reaches the embedded engine from other processes.

The query endpoint (see ``query_server``) hands SQL from any local client to the chDB engine
the pricer owns. The engine runs that SQL with ``readonly=2``, which refuses INSERT into
tables, DDL and SYSTEM, but chDB still lets a readonly session read and write files
(``file()``, ``INSERT INTO FUNCTION``, ``INTO OUTFILE``), read Python objects (``python()``),
reach the network (``url()``, ``s3()``, ``remote()``) and run several statements separated by
``;``. This module closes those gaps before the SQL is sent.

It is pure: no I/O, no clock. Its lexer follows ClickHouse's own (src/Parsers/Lexer.cpp)
wherever the two must agree on what is a string, a quoted identifier or a comment, because a
disagreement there is how statements get hidden. Where exact agreement would take more than
it is worth (heredocs, ``$``, backslashes, non-ASCII outside quotes, ``--`` glued to a number)
it refuses the query instead: failing closed costs a rare legitimate query, never a write.

``query_request`` shapes an accepted request for the engine.
"""

from __future__ import annotations

import itertools
import string
from collections.abc import Iterable
from dataclasses import dataclass

READONLY_CODE = 164
SYNTAX_ERROR_CODE = 62

READ_STATEMENTS = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN"})
# Words that only appear in SQL that writes (INSERT ..., SELECT ... INTO OUTFILE, FROM INFILE).
WRITE_WORDS = frozenset({"INSERT", "INTO", "OUTFILE", "INFILE"})
# Table functions that only compute or read this engine's own tables.
SAFE_TABLE_FUNCTIONS = frozenset(
    {
        "numbers", "numbers_mt", "zeros", "zeros_mt", "generateseries", "generate_series", "primes",
        "values", "null", "view", "viewifpermitted", "viewexplain", "merge", "format",
        "generaterandom", "dictionary", "mergetreeindex", "mergetreeprojection",
    }
)  # fmt: skip
# Functions (table or scalar) that touch files, the network, other processes or Python objects.
# The engine's own list of table functions is added at start-up (see denied_functions); this
# static list keeps the gate closed even without it. Compared lower-case.
ALWAYS_DENIED_FUNCTIONS = frozenset(
    {
        "file", "filecluster", "filesystem", "url", "urlcluster", "s3", "s3cluster", "gcs", "oss",
        "cosn", "azureblobstorage", "azureblobstoragecluster", "hdfs", "hdfscluster", "remote",
        "remotesecure", "cluster", "clusterallreplicas", "executable", "executablepool", "mysql",
        "postgresql", "mongodb", "redis", "sqlite", "jdbc", "odbc", "input", "python",
        "arrowstream", "bigquery", "ytsaurus", "catboostevaluate",
    }
)  # fmt: skip

_WORD_CHARS = frozenset(string.ascii_letters + string.digits + "_")
_WHITESPACE = frozenset(" \t\n\r\f\v")
_PUNCTUATION = frozenset("()[]{},.+-*/%=!<>?:|@")
_QUOTES = frozenset("'\"`")
_LINE_COMMENTS = ("--", "//", "# ", "#!")


class SqlRejectedError(ValueError):
    """A query the endpoint will not run; carries the ClickHouse error code and name to answer."""

    code = READONLY_CODE
    code_name = "READONLY"
    headline = "Cannot execute query in readonly mode"


class ReadOnlyViolationError(SqlRejectedError):
    """The query is not a single plain read."""


class NotAReadStatementError(ReadOnlyViolationError):
    """The statement does not start like a read; it may be a write or just a typo."""


class SqlSyntaxError(SqlRejectedError):
    """The query cannot be tokenized (unclosed quote or comment, or empty)."""

    code = SYNTAX_ERROR_CODE
    code_name = "SYNTAX_ERROR"
    headline = "Syntax error"


@dataclass(frozen=True)
class Token:
    """A significant token: ``word``, ``quoted`` (identifier), ``string``, ``punct`` or ``semi``."""

    kind: str
    text: str
    position: int


@dataclass(frozen=True)
class ReadQuery:
    """What the gate learned about an accepted query."""

    output_format: str | None


def denied_functions(engine_table_functions: Iterable[str]) -> frozenset[str]:
    """Every table function the engine has except the known-safe ones, plus the static list.

    Built from the engine's ``system.table_functions`` so that a table function added by a
    future chDB release is refused until someone decides it is safe.
    """
    engine = {name.lower() for name in engine_table_functions}
    return frozenset(engine - SAFE_TABLE_FUNCTIONS) | ALWAYS_DENIED_FUNCTIONS


def check_read_only(sql: str, denied: frozenset[str] = ALWAYS_DENIED_FUNCTIONS) -> ReadQuery:
    """Accept one read statement, or raise SqlRejectedError saying what was refused and why."""
    statement = _single_statement(tokenize(sql))
    _check_words(statement)
    _check_functions(statement, denied)
    _check_first_keyword(statement)
    return ReadQuery(output_format=output_format(statement))


def tokenize(sql: str) -> list[Token]:
    """Significant tokens of ``sql``; whitespace and comments are dropped."""
    tokens: list[Token] = []
    pos = 0
    while pos < len(sql):
        token, pos = _next_token(sql, pos)
        if token is not None:
            tokens.append(token)
    return tokens


def _next_token(sql: str, pos: int) -> tuple[Token | None, int]:
    char = sql[pos]
    if char in _WHITESPACE:
        return None, pos + 1
    if sql.startswith(_LINE_COMMENTS, pos):
        return None, _skip_line_comment(sql, pos)
    if sql.startswith("/*", pos):
        return None, _skip_block_comment(sql, pos)
    if char in _QUOTES:
        return _quoted(sql, pos)
    if char in _WORD_CHARS:
        end = pos
        while end < len(sql) and sql[end] in _WORD_CHARS:
            end += 1
        return Token("word", sql[pos:end], pos), end
    if char == ";":
        return Token("semi", char, pos), pos + 1
    if char in _PUNCTUATION:
        return Token("punct", char, pos), pos + 1
    raise ReadOnlyViolationError(
        f"character {char!r} at position {pos} is not accepted outside quotes on this endpoint"
    )


def _skip_line_comment(sql: str, pos: int) -> int:
    """Skip to the newline, like ClickHouse (which does not end these comments at ``\\r``).

    ClickHouse reads ``1e--x`` as the number ``1e-`` then a minus, not as a comment; rather
    than re-implement its number scanner, a ``--`` glued to a word or number is refused.
    """
    if sql.startswith("--", pos) and pos > 0 and sql[pos - 1] in _WORD_CHARS:
        raise ReadOnlyViolationError(f"'--' directly after a word or number at position {pos} is ambiguous")
    end = sql.find("\n", pos)
    return len(sql) if end < 0 else end


def _skip_block_comment(sql: str, pos: int) -> int:
    """Skip a ``/* */`` comment; ClickHouse nests them, so this does too."""
    depth, index = 1, pos + 2
    while index + 2 <= len(sql):
        if sql.startswith("/*", index):
            depth, index = depth + 1, index + 2
        elif sql.startswith("*/", index):
            depth, index = depth - 1, index + 2
            if depth == 0:
                return index
        else:
            index += 1
    raise SqlSyntaxError(f"multiline comment starting at position {pos} is not closed")


def _quoted(sql: str, pos: int) -> tuple[Token, int]:
    """A quoted string or identifier: backslash escapes and doubled quotes, as ClickHouse."""
    quote, index = sql[pos], pos + 1
    while index < len(sql):
        char = sql[index]
        if char == "\\" or sql.startswith(quote * 2, index):
            index += 2
        elif char == quote:
            kind = "string" if quote == "'" else "quoted"
            return Token(kind, sql[pos + 1 : index], pos), index + 1
        else:
            index += 1
    raise SqlSyntaxError(f"quoted text starting at position {pos} ({quote}) is not closed")


def _single_statement(tokens: list[Token]) -> list[Token]:
    """The tokens of the only statement; trailing ``;`` are allowed, a second statement is not."""
    end = len(tokens)
    while end and tokens[end - 1].kind == "semi":
        end -= 1
    statement = tokens[:end]
    if not statement:
        raise SqlSyntaxError("Empty query")
    for token in statement:
        if token.kind == "semi":
            raise ReadOnlyViolationError(f"multiple statements are not allowed (';' at position {token.position})")
    return statement


def _check_first_keyword(statement: list[Token]) -> None:
    """Checked last: callers may ask the engine to parse a statement that fails only this check."""
    first = statement[0]
    if first.kind == "punct" and first.text == "(":
        return
    if first.kind != "word" or first.text.upper() not in READ_STATEMENTS:
        allowed = ", ".join(sorted(READ_STATEMENTS))
        raise NotAReadStatementError(f"only {allowed} statements are allowed, got {first.text!r}")


def _check_words(statement: list[Token]) -> None:
    words = [token.text.upper() if token.kind == "word" else "" for token in statement]
    for index, word in enumerate(words):
        if word in WRITE_WORDS:
            raise ReadOnlyViolationError(f"{word} at position {statement[index].position} writes data")
        if word == "PARALLEL" and index + 1 < len(words) and words[index + 1] == "WITH":
            raise ReadOnlyViolationError("PARALLEL WITH runs more than one statement")


def _check_functions(statement: list[Token], denied: frozenset[str]) -> None:
    """Refuse calls to denied functions, also when the name is a quoted identifier."""
    for token, after in itertools.pairwise(statement):
        if (after.kind, after.text) != ("punct", "("):
            continue
        if (token.kind, token.text) == ("punct", "}"):
            raise ReadOnlyViolationError(f"a query parameter cannot name a function (position {after.position})")
        if token.kind not in ("word", "quoted"):
            continue
        if token.kind == "quoted" and ("\\" in token.text or "`" in token.text or '"' in token.text):
            raise ReadOnlyViolationError(f"escaped quoted function name at position {token.position}")
        if token.text.lower() in denied:
            raise ReadOnlyViolationError(
                f"function {token.text}() at position {token.position} reaches outside the database"
            )


def output_format(statement: list[Token]) -> str | None:
    """The name in a top-level trailing ``FORMAT name [SETTINGS ...]`` clause, if any."""
    depth, found = 0, None
    for index, token in enumerate(statement):
        if token.kind == "punct" and token.text in "([":
            depth += 1
        elif token.kind == "punct" and token.text in ")]":
            depth -= 1
        elif depth == 0 and _is_format_clause(statement, index):
            found = statement[index + 1].text
    return found


def _is_format_clause(statement: list[Token], index: int) -> bool:
    token = statement[index]
    if token.kind != "word" or token.text.upper() != "FORMAT" or index + 1 >= len(statement):
        return False
    if statement[index + 1].kind not in ("word", "quoted"):
        return False
    rest = statement[index + 2 :]
    return not rest or (rest[0].kind == "word" and rest[0].text.upper() == "SETTINGS")

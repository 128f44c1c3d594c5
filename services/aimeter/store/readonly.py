"""The lexer half of the query endpoint's gate: what the engine's own parser cannot tell us.

The engine decides almost everything about a query (see ``query_gate``): whether it is one
statement, what kind of statement, which functions it calls, which output format it asks for.
Two things its ``EXPLAIN AST`` dump does not label (``tests/integration/test_query_gate.py``
shows both): an ``INTO OUTFILE`` target is an anonymous ``Literal`` child, and chDB writes that
file on the client side even with ``readonly=1``; a ``FORMAT`` name is an ``Identifier`` child
that looks like a table name under ``EXISTS``/``SHOW CREATE``. So the words that only appear in
SQL that touches files (``INTO OUTFILE``, ``FROM INFILE``, ``INSERT``) are found here, before
any text is sent to the engine at all, and so is the name of a trailing ``FORMAT`` clause.

It is pure: no I/O, no clock. Its tokenizer follows ClickHouse's own (src/Parsers/Lexer.cpp)
wherever the two must agree on what is a string, a quoted identifier or a comment, because a
disagreement there is how a word gets hidden. Where exact agreement would take more than it is
worth (heredocs, ``$``, backslashes, non-ASCII outside quotes, ``--`` glued to a number) it
refuses the query instead: failing closed costs a rare legitimate query, never a file.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

READONLY_CODE = 164
SYNTAX_ERROR_CODE = 62

# Words that only appear in SQL that writes or touches files: INSERT ..., SELECT ... INTO OUTFILE,
# INSERT ... FROM INFILE.
FILE_WORDS = frozenset({"INSERT", "INTO", "OUTFILE", "INFILE"})

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


def check_no_file_clauses(sql: str) -> list[Token]:
    """Refuse SQL whose words write or touch files; return its significant tokens.

    Runs before the engine sees the text, so an ``INTO OUTFILE`` never reaches even the parser
    (``EXPLAIN AST ...`` would bind a trailing ``INTO OUTFILE`` to the explained query).
    """
    tokens = tokenize(sql)
    if not any(token.kind != "semi" for token in tokens):
        raise SqlSyntaxError("Empty query")
    for token in tokens:
        if token.kind == "word" and token.text.upper() in FILE_WORDS:
            raise ReadOnlyViolationError(f"{token.text.upper()} at position {token.position} writes data or files")
    return tokens


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


def output_format(tokens: list[Token]) -> str | None:
    """The name in a top-level trailing ``FORMAT name [SETTINGS ...]`` clause, if any."""
    statement = [token for token in tokens if token.kind != "semi"]
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

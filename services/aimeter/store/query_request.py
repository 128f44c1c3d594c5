"""Shaping an accepted read for the engine: which HTTP URL parameters are query parameters,
settings or transport, and how settings and names are quoted. Pure, like ``readonly``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from aimeter.store.readonly import SqlRejectedError, check_read_only

DEFAULT_FORMAT = "TabSeparated"
# Guards against a mistaken query (e.g. system.numbers) exhausting the pricer's memory or
# time; clients may raise them per request with URL parameters.
DEFAULT_LIMITS = {"max_execution_time": "300", "max_result_bytes": str(512 * 2**20), "result_overflow_mode": "throw"}
# URL parameters that steer the HTTP transport in ClickHouse, or that chDB does not know;
# they are consumed here or ignored, never applied as settings.
TRANSPORT_PARAMS = frozenset(
    {
        "query", "database", "default_format", "query_id", "user", "password", "quota_key", "role",
        "session_id", "session_timeout", "session_check", "close_session", "compress", "decompress",
        "buffer_size", "wait_end_of_query", "client_protocol_version", "stacktrace", "readonly",
        "enable_http_compression", "send_progress_in_http_headers", "http_headers_progress_interval_ms",
        "http_wait_end_of_query", "http_response_buffer_size", "add_http_cors_header",
        "cancel_http_readonly_queries_on_client_close",
        "http_native_compression_disable_checksumming_on_decompress",
    }
)  # fmt: skip
# Names chDB's Python API turns into Python objects instead of bytes.
_PYTHON_ONLY_FORMATS = frozenset({"dataframe", "datastore", "arrowtable"})
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class BadRequestError(SqlRejectedError):
    """The HTTP request itself is unusable (bad encoding, external data, unknown setting name)."""

    def __init__(self, message: str, code: int = 36, code_name: str = "BAD_ARGUMENTS") -> None:
        super().__init__(message)
        self.code, self.code_name, self.headline = code, code_name, "Bad request"


@dataclass(frozen=True)
class QueryRequest:
    """One accepted read, ready for the engine."""

    sql: str
    output_format: str = DEFAULT_FORMAT
    database: str | None = None
    settings: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)


def build_request(sql: str, params: Mapping[str, str], denied: frozenset[str]) -> QueryRequest:
    """Gate the SQL and sort URL parameters into query parameters, settings and transport."""
    read = check_read_only(sql, denied)
    output_format = read.output_format or params.get("default_format") or DEFAULT_FORMAT
    if output_format.lower() in _PYTHON_ONLY_FORMATS:
        raise BadRequestError(f"Unknown format {output_format}", 73, "UNKNOWN_FORMAT")
    return QueryRequest(
        sql=sql,
        output_format=output_format,
        database=params.get("database") or None,
        settings={k: v for k, v in params.items() if k not in TRANSPORT_PARAMS and not k.startswith("param_")},
        params={k.removeprefix("param_"): v for k, v in params.items() if k.startswith("param_")},
    )


def set_statement(settings: Mapping[str, str]) -> str:
    """One ``SET`` for all settings; names must be identifiers, values are quoted literals."""
    for name in settings:
        if not _IDENTIFIER.fullmatch(name):
            raise BadRequestError(f"Unknown setting {name!r}", 115, "UNKNOWN_SETTING")
    return "SET " + ", ".join(f"{name} = {quote_string(value)}" for name, value in settings.items())


def quote_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"

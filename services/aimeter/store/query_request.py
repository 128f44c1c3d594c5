"""Shaping an accepted read for the engine: which HTTP URL parameters are query parameters,
client settings or transport, and which settings the query finally runs with. Pure.

Every query runs on a fresh chDB connection whose settings are fixed when it opens, with
``readonly=1``: the engine then refuses any later change, whether from ``SET`` or from a
``SETTINGS`` clause in the SQL. So the settings below are the whole story: the server's limits,
plus the few a client may send, each for a named reason.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from aimeter.store.query_gate import check_output_format
from aimeter.store.readonly import SqlRejectedError, check_no_file_clauses, output_format

DEFAULT_FORMAT = "TabSeparated"
# URL parameters that steer the HTTP transport in ClickHouse (or carry credentials); they are
# consumed here or ignored, never applied as settings.
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
# Settings a client may send, and why each is needed. None of them reads or writes a file.
CLIENT_SETTINGS = {
    "session_timezone": "clickhouse-connect and Grafana render DateTime in the client's zone",
    "output_format_json_quote_64bit_integers": "Grafana and JavaScript clients read UInt64 as JSON strings",
    "output_format_json_quote_decimals": "JSON clients that keep Decimal exact read it as a string",
    "output_format_json_named_tuples_as_objects": "the Grafana ClickHouse plugin reads tuples as objects",
    "output_format_decimal_trailing_zeros": "finance exports that want 12 decimal places printed",
    "date_time_output_format": "clients that want ISO or Unix timestamps in text formats",
    "output_format_arrow_string_as_string": "clickhouse-connect's Arrow reads String as Arrow string",
    "extremes": "the Grafana plugin's table view asks for min/max rows",
    "max_block_size": "clients that stream big results in smaller blocks (no effect on limits)",
}
# Limits a client may lower, never raise (or switch off with 0): the server's value wins over
# any larger one. Others, like max_memory_usage, only the server sets.
CLAMPED_LIMITS = frozenset({"max_execution_time", "max_result_rows", "max_result_bytes", "max_threads"})
_VALUE = re.compile(r"[A-Za-z0-9_.:+/-]{0,64}")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class BadRequestError(SqlRejectedError):
    """The HTTP request itself is unusable (bad encoding, external data, a setting not accepted)."""

    def __init__(self, message: str, code: int = 36, code_name: str = "BAD_ARGUMENTS") -> None:
        super().__init__(message)
        self.code, self.code_name, self.headline = code, code_name, "Bad request"


@dataclass(frozen=True)
class ServerLimits:
    """What every query runs with; a client cannot raise any of them."""

    max_execution_time_s: int = 120
    max_memory_usage_bytes: int = 2**30
    max_result_bytes: int = 256 * 2**20
    max_threads: int = 2

    def settings(self) -> dict[str, str]:
        return {
            "readonly": "1",
            "max_execution_time": str(self.max_execution_time_s),
            "timeout_overflow_mode": "throw",
            "max_memory_usage": str(self.max_memory_usage_bytes),
            "max_result_bytes": str(self.max_result_bytes),
            "max_result_rows": "0",
            "result_overflow_mode": "throw",
            "max_threads": str(self.max_threads),
            # Report threads yield the CPU to ingestion (the pricer's inserts run at nice 0).
            "os_thread_priority": "10",
        }


@dataclass(frozen=True)
class QueryRequest:
    """One accepted read, ready for the engine."""

    sql: str
    output_format: str = DEFAULT_FORMAT
    database: str | None = None
    settings: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)


def build_request(sql: str, params: Mapping[str, str], limits: ServerLimits) -> QueryRequest:
    """Check the words, the format and the settings, and sort URL parameters into their roles."""
    tokens = check_no_file_clauses(sql)
    chosen = output_format(tokens) or params.get("default_format") or DEFAULT_FORMAT
    check_output_format(chosen)
    client = {k: v for k, v in params.items() if k not in TRANSPORT_PARAMS and not k.startswith("param_")}
    return QueryRequest(
        sql=sql,
        output_format=chosen,
        database=params.get("database") or None,
        settings=effective_settings(client, limits),
        params={k.removeprefix("param_"): v for k, v in params.items() if k.startswith("param_")},
    )


def effective_settings(client: Mapping[str, str], limits: ServerLimits) -> dict[str, str]:
    """The server's limits, lowered where the client asked for less, plus allowed client settings."""
    settings = limits.settings()
    for name, value in client.items():
        if not _IDENTIFIER.fullmatch(name) or not _VALUE.fullmatch(value):
            raise BadRequestError(f"setting {name[:64]!r} has a name or value this endpoint does not accept", 115,
                                  "UNKNOWN_SETTING")
        if name in CLAMPED_LIMITS:
            settings[name] = _lower(settings[name], value, name)
        elif name in CLIENT_SETTINGS:
            settings[name] = value
        else:
            allowed = ", ".join(sorted([*CLIENT_SETTINGS, *CLAMPED_LIMITS]))
            raise BadRequestError(f"setting {name!r} is not accepted on this endpoint (accepted: {allowed})", 115,
                                  "UNKNOWN_SETTING")
    return settings


def _lower(server: str, client: str, name: str) -> str:
    """The smaller positive limit; 0 means "no limit", which only the server may choose."""
    try:
        asked = int(float(client))
    except ValueError:
        raise BadRequestError(f"setting {name} must be a number, got {client!r}") from None
    limit = int(server)
    if asked <= 0:
        return server
    return str(asked if limit == 0 else min(asked, limit))


def connection_string(path: str, settings: Mapping[str, str]) -> str:
    """chDB fixes a connection's settings when it opens: ``path?name=value&...``.

    Names are identifiers and values match ``_VALUE`` (no ``&``, ``=``, ``?`` or ``%``), so a
    value cannot add a setting of its own.
    """
    for name, value in settings.items():
        if not _IDENTIFIER.fullmatch(name) or not _VALUE.fullmatch(value):
            raise BadRequestError(f"setting {name[:64]!r} cannot be passed to the engine")
    return path + "?" + "&".join(f"{name}={value}" for name, value in settings.items())


def quote_identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"

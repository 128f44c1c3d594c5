"""Read-only ClickHouse HTTP endpoint in front of the embedded chDB engine.

In embedded mode one process (the pricer) owns the chDB data directory: chDB locks it, so
``aimeter spend``, tests and dashboards in other processes cannot open it. The owner serves
this endpoint instead. It speaks enough of ClickHouse's HTTP interface that the ordinary
``clickhouse_connect.get_client(host=..., port=...)`` client and plain curl work unchanged:
query text from the ``query`` URL parameter and/or the body (or a multipart form), ``param_*``
query parameters, ``database``, ``default_format``, other URL parameters applied as settings,
``/ping``, and ClickHouse's response and error headers.

Reads only, enforced twice: ``readonly.check_read_only`` refuses anything but one plain read
statement, and every query runs on a chDB connection opened with ``readonly=2``. chDB calls
block, so they run on a small thread pool; each query gets its own connection (chDB runs
connections in parallel; one connection must not be shared by threads), which also keeps one
client's settings from leaking into another's. There is no authentication: bind to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import chdb
from aiohttp import web
from chdb.state.sqlitelike import Connection

from aimeter.store.query_request import (
    DEFAULT_LIMITS,
    BadRequestError,
    QueryRequest,
    build_request,
    quote_identifier,
    quote_string,
    set_statement,
)
from aimeter.store.readonly import (
    ALWAYS_DENIED_FUNCTIONS,
    SYNTAX_ERROR_CODE,
    NotAReadStatementError,
    ReadOnlyViolationError,
    SqlRejectedError,
    denied_functions,
)

_T = TypeVar("_T")
_R = TypeVar("_R")

QUERY_THREADS = 4
_ERROR_CODE = re.compile(r"Code: (\d+)\.")
# ClickHouse's exceptionCodeToHTTPStatus; anything else is 500 (including READONLY, 164).
_HTTP_STATUS = {
    **dict.fromkeys((6, 8, 15, 25, 26, 27, 36, 37, 38, 41, 44, 53, 62, 72, 117, 123, 167, 168), 400),
    **dict.fromkeys((223, 321, 376, 427, 441, 675, 676), 400),
    **dict.fromkeys((46, 47, 50, 56, 60, 63, 73, 78, 81, 115, 152, 336, 511), 404),
    **dict.fromkeys((192, 193, 497, 512, 516), 403),
    194: 401, 229: 413, 48: 501, 76: 503, 209: 503, 439: 503, 159: 408, 381: 411, 779: 415,
}  # fmt: skip


@dataclass(frozen=True)
class ServerInfo:
    """Engine facts sent in every response and used by the read-only gate."""

    version: str
    timezone: str
    display_name: str
    denied: frozenset[str]


@dataclass(frozen=True)
class QueryOutcome:
    """The formatted result and the counters ClickHouse reports in X-ClickHouse-Summary."""

    body: bytes
    rows_read: int
    bytes_read: int
    elapsed_ns: int


class ChdbQueryEngine:
    """Runs reads on this process's chDB engine with ``readonly=2``; every method blocks."""

    def __init__(self, chdb_path: str) -> None:
        # clickhouse-connect normalizes the path the same way; chDB compares paths literally.
        self.connection_string = f"{os.path.realpath(chdb_path)}?readonly=2"
        self._anchor: Connection | None = None

    def open(self) -> ServerInfo:
        """Hold a connection for the server's lifetime (chDB stops the engine at the last close)
        and refuse to start if chDB did not honour readonly=2."""
        self._anchor = chdb.connect(self.connection_string)
        try:
            return self._server_info(self._anchor)
        except BaseException:
            self.close()
            raise

    def _server_info(self, anchor: Connection) -> ServerInfo:
        row = anchor.query("SELECT getSetting('readonly'), version(), timezone(), displayName()", "TSV")
        readonly, version, timezone, name = str(row).rstrip("\n").split("\t")
        if readonly != "2":
            raise RuntimeError(f"chDB ignored readonly=2 in {self.connection_string!r} (readonly={readonly})")
        functions = str(anchor.query("SELECT name FROM system.table_functions", "TSV")).split()
        return ServerInfo(version, timezone, name, denied_functions(functions))

    def execute(self, request: QueryRequest) -> QueryOutcome:
        """Run one query on a fresh connection, so settings and USE never outlive the request."""
        connection = chdb.connect(self.connection_string)
        try:
            connection.query(set_statement({**DEFAULT_LIMITS, **request.settings}))
            if request.database:
                connection.query(f"USE {quote_identifier(request.database)}")
            result = connection.query(request.sql, request.output_format, params=dict(request.params))
            return QueryOutcome(result.bytes(), result.rows_read(), result.bytes_read(), int(result.elapsed() * 1e9))
        finally:
            connection.close()

    def syntax_error(self, sql: str) -> str | None:
        """ClickHouse's own syntax error for ``sql``, if it has one.

        ``formatQuery`` parses its argument without running it, so statements the gate refused
        can still be told apart: a typo gets the real parser message, a write gets READONLY.
        """
        connection = chdb.connect(self.connection_string)
        try:
            connection.query(f"SELECT formatQuery({quote_string(sql)})", "TSV")
        except RuntimeError as error:
            return str(error) if f"Code: {SYNTAX_ERROR_CODE}." in str(error) else None
        finally:
            connection.close()
        return None

    def close(self) -> None:
        if self._anchor is not None:
            self._anchor.close()
            self._anchor = None


@dataclass
class _State:
    engine: ChdbQueryEngine
    executor: ThreadPoolExecutor
    info: ServerInfo = field(default_factory=lambda: ServerInfo("", "UTC", "", ALWAYS_DENIED_FUNCTIONS))


_STATE = web.AppKey("aimeter_query_state", _State)


async def _read_sql(request: web.Request) -> tuple[str, dict[str, str]]:
    """Query text (URL ``query`` then body, as ClickHouse concatenates them) and URL/form params."""
    params = dict(request.query)
    parts = [params.pop("query", "")]
    if request.content_type == "multipart/form-data":
        for name, value in (await request.post()).items():
            if not isinstance(value, str):
                raise BadRequestError("external data tables are not supported", 48, "NOT_IMPLEMENTED")
            if name == "query":
                parts.append(value)
            else:
                params[name] = value
    elif request.can_read_body:
        body = await request.read()
        try:
            parts.append(body.decode())
        except UnicodeDecodeError:
            # SQL is text; binary (or lz4/zstd-compressed) bodies are what INSERTs send.
            raise ReadOnlyViolationError("the request body is not UTF-8 SQL but data, as INSERT sends") from None
    return "\n".join(part for part in parts if part), params


def _base_headers(info: ServerInfo, params: Mapping[str, str]) -> dict[str, str]:
    return {
        "X-ClickHouse-Server-Display-Name": info.display_name,
        "X-ClickHouse-Query-Id": params.get("query_id") or str(uuid.uuid4()),
        "X-ClickHouse-Timezone": params.get("session_timezone") or info.timezone,
    }


def content_type(output_format: str) -> str:
    """Roughly what ClickHouse sends per format; clients key on X-ClickHouse-Format anyway."""
    name = output_format.lower()
    if name.startswith(("tabseparated", "tsv")):
        return "text/tab-separated-values; charset=UTF-8"
    if name.startswith("csv"):
        return "text/csv; charset=UTF-8; header=" + ("present" if "withnames" in name else "absent")
    if name.startswith("json"):
        return "application/json; charset=UTF-8"
    if name.startswith(("native", "rowbinary", "parquet", "arrow", "orc", "avro", "protobuf", "msgpack")):
        return "application/octet-stream"
    return "text/plain; charset=UTF-8"


def error_response(info: ServerInfo, params: Mapping[str, str], code: int, message: str) -> web.Response:
    """ClickHouse's error shape, which clickhouse-connect turns into a DatabaseError."""
    if "(version " not in message:
        message = f"{message} (version {info.version})"
    headers = {**_base_headers(info, params), "X-ClickHouse-Exception-Code": str(code)}
    headers["Content-Type"] = "text/plain; charset=UTF-8"
    return web.Response(status=_HTTP_STATUS.get(code, 500), text=message + "\n", headers=headers)


def success_response(info: ServerInfo, params: Mapping[str, str], fmt: str, outcome: QueryOutcome) -> web.Response:
    summary = {
        "read_rows": outcome.rows_read, "read_bytes": outcome.bytes_read, "written_rows": 0,
        "written_bytes": 0, "total_rows_to_read": outcome.rows_read, "result_bytes": len(outcome.body),
        "elapsed_ns": outcome.elapsed_ns,
    }  # fmt: skip
    headers = {**_base_headers(info, params), "X-ClickHouse-Format": fmt, "Content-Type": content_type(fmt)}
    headers["X-ClickHouse-Summary"] = json.dumps({key: str(value) for key, value in summary.items()})
    return web.Response(body=outcome.body, headers=headers)


def _engine_error(info: ServerInfo, params: Mapping[str, str], error_text: str) -> web.Response:
    """Relay a chDB error (already ``Code: N. DB::Exception: ...``) as ClickHouse would."""
    start = error_text.find("Code: ")
    message = error_text[start:].strip() if start >= 0 else f"Code: 1001. DB::Exception: {error_text}. (STD_EXCEPTION)"
    match = _ERROR_CODE.match(message)
    return error_response(info, params, int(match.group(1)) if match else 1001, message)


def _rejection(info: ServerInfo, params: Mapping[str, str], error: SqlRejectedError) -> web.Response:
    message = f"Code: {error.code}. DB::Exception: {error.headline}: {error}. ({error.code_name})"
    return error_response(info, params, error.code, message)


async def _in_worker(state: _State, call: Callable[[_T], _R], argument: _T) -> _R:
    return await asyncio.get_running_loop().run_in_executor(state.executor, call, argument)


async def _answer(state: _State, sql: str, params: Mapping[str, str]) -> web.Response:
    """Gate, run and format one query; a typo in the first word gets ClickHouse's syntax error."""
    try:
        query = build_request(sql, params, state.info.denied)
    except NotAReadStatementError as error:
        syntax_error = await _in_worker(state, state.engine.syntax_error, sql)
        if syntax_error:
            return _engine_error(state.info, params, syntax_error)
        return _rejection(state.info, params, error)
    outcome = await _in_worker(state, state.engine.execute, query)
    return success_response(state.info, params, query.output_format, outcome)


async def _handle_query(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    params: dict[str, str] = dict(request.query)
    try:
        sql, params = await _read_sql(request)
        if not sql and request.method != "POST":
            return web.Response(text="Ok.\n")
        return await _answer(state, sql, params)
    except SqlRejectedError as error:
        return _rejection(state.info, params, error)
    except RuntimeError as error:  # chdb.ChdbError, and a query arriving during shutdown
        return _engine_error(state.info, params, str(error))


async def _handle_ping(_request: web.Request) -> web.Response:
    return web.Response(text="Ok.\n")


async def _open_engine(app: web.Application) -> None:
    state = app[_STATE]
    try:
        state.info = await asyncio.get_running_loop().run_in_executor(state.executor, state.engine.open)
    except BaseException:
        # aiohttp runs no cleanup for a failed startup; do not leave the threads behind.
        state.executor.shutdown(wait=False)
        raise


async def _close_engine(app: web.Application) -> None:
    state = app[_STATE]
    await asyncio.get_running_loop().run_in_executor(state.executor, state.engine.close)
    await asyncio.to_thread(state.executor.shutdown, True)


def make_query_app(chdb_path: str) -> web.Application:
    """The endpoint as an aiohttp app; the chDB engine opens on startup and closes on cleanup."""
    app = web.Application()
    executor = ThreadPoolExecutor(max_workers=QUERY_THREADS, thread_name_prefix="aimeter-query")
    app[_STATE] = _State(ChdbQueryEngine(chdb_path), executor)
    app.router.add_get("/", _handle_query)
    app.router.add_post("/", _handle_query)
    app.router.add_get("/ping", _handle_ping)
    app.on_startup.append(_open_engine)
    app.on_cleanup.append(_close_engine)
    return app


async def serve_queries(chdb_path: str, host: str, port: int) -> web.AppRunner:
    """Start the endpoint on ``host:port`` (port 0 picks a free one, see ``runner.addresses``).

    Returns the started runner; the caller awaits ``runner.cleanup()`` to stop it.
    """
    runner = web.AppRunner(make_query_app(chdb_path))
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner

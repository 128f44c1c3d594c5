"""Read-only ClickHouse HTTP endpoint in front of the embedded chDB engine.

In embedded mode one process (the pricer) owns the chDB data directory: chDB locks it, so
``aimeter spend``, tests and dashboards in other processes cannot open it. The owner serves
this endpoint instead. It speaks enough of ClickHouse's HTTP interface that the ordinary
``clickhouse_connect.get_client(host=..., port=..., username=..., password=...)`` client, curl and
the Grafana ClickHouse plugin work unchanged: query text from the ``query`` URL parameter and/or
the body (or a multipart form), ``param_*`` query parameters, ``database``, ``default_format``,
a few allowed settings as URL parameters, ``/ping``, and ClickHouse's response and error headers.

Each request passes, in order: the browser check and the reader's credential (``query_auth``);
the lexer, for file clauses and the FORMAT name (``readonly``); the format and settings
allow-lists (``query_request``); the engine's own parser, whose tree must be a read that calls
no denied function (``query_gate``). It then runs on a fresh chDB connection opened with
``readonly=1`` and the server's limits, which the engine refuses to let the query change. A
query whose client hangs up is killed; at most ``max_concurrent`` run at once, the rest wait a
bounded time for a slot. chDB calls block, so they run on thread pools: one for queries, one
for the parser and kills, so a parse never waits behind a slow report.
"""

from __future__ import annotations

import asyncio
import json
import logging
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

from aimeter.store.query_auth import (
    AccessDeniedError,
    allowed_hosts,
    check_browser,
    check_credentials,
    ensure_password,
    password_file_for,
    presented_credentials,
)
from aimeter.store.query_gate import ALWAYS_DENIED_FUNCTIONS, OUTPUT_FORMATS, check_tree, denied_functions
from aimeter.store.query_request import (
    BadRequestError,
    QueryRequest,
    ServerLimits,
    build_request,
    connection_string,
    quote_identifier,
)
from aimeter.store.readonly import SYNTAX_ERROR_CODE, ReadOnlyViolationError, SqlRejectedError

_T = TypeVar("_T")
_R = TypeVar("_R")
log = logging.getLogger(__name__)

MAX_CONCURRENT = 4
QUEUE_WAIT_S = 30.0
_ERROR_CODE = re.compile(r"Code: (\d+)\.")
# ClickHouse's exceptionCodeToHTTPStatus; anything else is 500 (including READONLY, 164).
_HTTP_STATUS = {
    **dict.fromkeys((6, 8, 15, 25, 26, 27, 36, 37, 38, 41, 44, 53, 62, 72, 117, 123, 167, 168), 400),
    **dict.fromkeys((223, 321, 376, 427, 441, 675, 676), 400),
    **dict.fromkeys((46, 47, 50, 56, 60, 63, 73, 78, 81, 115, 152, 336, 511), 404),
    **dict.fromkeys((192, 193, 497, 512, 516), 403),
    194: 401, 229: 413, 48: 501, 76: 503, 202: 503, 209: 503, 439: 503, 159: 408, 381: 411, 779: 415,
}  # fmt: skip
# The parser's own connection: a parse is quick, and it must never run long.
_PARSE_LIMITS = {"readonly": "1", "max_execution_time": "10", "max_threads": "1"}


@dataclass(frozen=True)
class ServerInfo:
    """Engine facts sent in every response and used by the gate."""

    version: str
    timezone: str
    display_name: str
    denied: frozenset[str]
    denied_formats: frozenset[str] = frozenset()


@dataclass(frozen=True)
class QueryOutcome:
    """The formatted result and the counters ClickHouse reports in X-ClickHouse-Summary."""

    body: bytes
    rows_read: int
    bytes_read: int
    elapsed_ns: int


class ChdbQueryEngine:
    """Parses and runs reads on this process's chDB engine; every method blocks."""

    def __init__(self, chdb_path: str) -> None:
        # clickhouse-connect normalizes the path the same way; chDB compares paths literally.
        self.path = os.path.realpath(chdb_path)
        self._anchor: Connection | None = None

    def open(self) -> ServerInfo:
        """Hold a connection for the server's lifetime (chDB stops the engine at the last close)
        and refuse to start if chDB did not honour readonly=1."""
        self._anchor = chdb.connect(connection_string(self.path, _PARSE_LIMITS))
        try:
            return self._server_info(self._anchor)
        except BaseException:
            self.close()
            raise

    def _server_info(self, anchor: Connection) -> ServerInfo:
        row = anchor.query("SELECT getSetting('readonly'), version(), timezone(), displayName()", "TSV")
        readonly, version, timezone, name = str(row).rstrip("\n").split("\t")
        if readonly != "1":
            raise RuntimeError(f"chDB ignored readonly=1 for {self.path!r} (readonly={readonly})")
        functions = str(anchor.query("SELECT name FROM system.table_functions", "TSV")).split()
        formats = str(anchor.query("SELECT name FROM system.formats WHERE is_output", "TSV")).split()
        denied_formats = frozenset(name.lower() for name in formats) - OUTPUT_FORMATS
        return ServerInfo(version, timezone, name, denied_functions(functions), denied_formats)

    def parse(self, sql: str, params: Mapping[str, str]) -> str:
        """The engine's parse tree of ``sql`` (EXPLAIN AST), or its syntax error as RuntimeError.

        ``formatQuery`` first: it gets the text as a bound parameter, runs nothing, and refuses a
        second statement. Only then may the text follow ``EXPLAIN AST``, where a second
        statement would have run.
        """
        connection = chdb.connect(connection_string(self.path, _PARSE_LIMITS))
        try:
            connection.query("SELECT formatQuery({q:String})", "TSV", params={"q": _escaped(sql)})
            return str(connection.query(f"EXPLAIN AST {sql}", "TSV", params=dict(params)))
        finally:
            connection.close()

    def execute(self, request: QueryRequest, tag: str = "") -> QueryOutcome:
        """Run one query on a fresh connection whose settings are fixed as it opens."""
        # readonly=1 whatever the request says: the engine is the last line, not the gate.
        settings = {**request.settings, "readonly": "1", **({"log_comment": tag} if tag else {})}
        connection = chdb.connect(connection_string(self.path, settings))
        try:
            if request.database:
                connection.query(f"USE {quote_identifier(request.database)}")
            result = connection.query(request.sql, request.output_format, params=dict(request.params))
            return QueryOutcome(result.bytes(), result.rows_read(), result.bytes_read(), int(result.elapsed() * 1e9))
        finally:
            connection.close()

    def kill(self, tag: str) -> None:
        """Cancel the query run with ``tag`` (its client went away)."""
        connection = chdb.connect(connection_string(self.path, _PARSE_LIMITS))
        try:
            connection.query("KILL QUERY WHERE Settings['log_comment'] = {tag:String} ASYNC", "TSV",
                             params={"tag": tag})
        finally:
            connection.close()

    def close(self) -> None:
        if self._anchor is not None:
            self._anchor.close()
            self._anchor = None


def _escaped(value: str) -> str:
    """A query parameter value as the engine reads it: TSV escaping, so any text survives."""
    return value.translate({ord("\\"): "\\\\", ord("\n"): "\\n", ord("\t"): "\\t", ord("\r"): "\\r", 0: "\\0"})


@dataclass
class _State:
    engine: ChdbQueryEngine
    limits: ServerLimits
    queries: ThreadPoolExecutor
    control: ThreadPoolExecutor
    slots: asyncio.Semaphore
    queue_wait_s: float
    password: str = ""
    hosts: frozenset[str] = frozenset()
    waiting: int = 0
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


async def _in_control(state: _State, call: Callable[..., _R], *args: object) -> _R:
    return await asyncio.get_running_loop().run_in_executor(state.control, call, *args)


async def _gate(state: _State, sql: str, params: Mapping[str, str]) -> QueryRequest | web.Response:
    """The checks in order; an answer (error) or the request to run."""
    query = build_request(sql, params, state.limits)
    try:
        tree = await _in_control(state, state.engine.parse, sql, query.params)
    except RuntimeError as error:
        if "Multi-statements are not allowed" in str(error):
            raise ReadOnlyViolationError("multiple statements are not allowed") from None
        if f"Code: {SYNTAX_ERROR_CODE}." in str(error):
            return _engine_error(state.info, params, str(error))
        raise
    check_tree(tree, state.info.denied, state.info.denied_formats)
    return query


async def _run(state: _State, query: QueryRequest) -> QueryOutcome:
    """Run in a slot; a client that hangs up gets its query killed, and its slot back only when
    the engine has stopped it."""
    if state.waiting >= 4 * MAX_CONCURRENT:
        raise _TooManyQueriesError("too many queries are waiting; try again shortly")
    state.waiting += 1
    try:
        await asyncio.wait_for(state.slots.acquire(), state.queue_wait_s)
    except TimeoutError:
        raise _TooManyQueriesError(f"no query slot became free within {state.queue_wait_s:g} s") from None
    finally:
        state.waiting -= 1
    tag = uuid.uuid4().hex
    future = asyncio.get_running_loop().run_in_executor(state.queries, state.engine.execute, query, tag)
    future.add_done_callback(lambda _: state.slots.release())
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        log.info("query endpoint: client went away; killing its query %s", tag)
        state.control.submit(state.engine.kill, tag)
        future.add_done_callback(lambda done: done.exception())  # the kill's error is expected
        raise


class _ResultTooLargeError(SqlRejectedError):
    code = 396
    code_name = "TOO_MANY_ROWS_OR_BYTES"
    headline = "Limit for result exceeded"


class _TooManyQueriesError(SqlRejectedError):
    code = 202
    code_name = "TOO_MANY_SIMULTANEOUS_QUERIES"
    headline = "Too many simultaneous queries"


async def _answer(state: _State, sql: str, params: Mapping[str, str]) -> web.Response:
    gated = await _gate(state, sql, params)
    if isinstance(gated, web.Response):
        return gated
    outcome = await _run(state, gated)
    # The engine checks max_result_bytes between blocks, so a one-block result can pass it.
    limit = int(gated.settings.get("max_result_bytes", "0"))
    if limit and len(outcome.body) > limit:
        raise _ResultTooLargeError(f"the result is {len(outcome.body)} bytes, more than this endpoint's {limit}")
    return success_response(state.info, params, gated.output_format, outcome)


def _admit(state: _State, request: web.Request, params: Mapping[str, str]) -> None:
    check_browser(request.headers, state.hosts)
    check_credentials(presented_credentials(request.headers, params), state.password)


async def _handle_query(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    params: dict[str, str] = dict(request.query)
    try:
        check_browser(request.headers, state.hosts)
        sql, params = await _read_sql(request)
        _admit(state, request, params)
        if not sql and request.method != "POST":
            return web.Response(text="Ok.\n")
        return await _answer(state, sql, params)
    except AccessDeniedError as error:
        return _denied(state.info, error)
    except SqlRejectedError as error:
        return _rejection(state.info, params, error)
    except RuntimeError as error:  # chdb.ChdbError, and a query arriving during shutdown
        return _engine_error(state.info, params, str(error))


def _denied(info: ServerInfo, error: AccessDeniedError) -> web.Response:
    return error_response(info, {}, error.code, f"Code: {error.code}. DB::Exception: {error}. ({error.code_name})")


async def _handle_ping(request: web.Request) -> web.Response:
    """Unauthenticated, as in ClickHouse, but still not for browsers."""
    state = request.app[_STATE]
    try:
        check_browser(request.headers, state.hosts)
    except AccessDeniedError as error:
        return _denied(state.info, error)
    return web.Response(text="Ok.\n")


async def _open_engine(app: web.Application) -> None:
    state = app[_STATE]
    try:
        state.info = await asyncio.get_running_loop().run_in_executor(state.control, state.engine.open)
    except BaseException:
        # aiohttp runs no cleanup for a failed startup; do not leave the threads behind.
        state.queries.shutdown(wait=False)
        state.control.shutdown(wait=False)
        raise


async def _close_engine(app: web.Application) -> None:
    state = app[_STATE]
    await asyncio.to_thread(state.queries.shutdown, True)
    await asyncio.get_running_loop().run_in_executor(state.control, state.engine.close)
    await asyncio.to_thread(state.control.shutdown, True)


def make_query_app(chdb_path: str, *, limits: ServerLimits | None = None, max_concurrent: int = MAX_CONCURRENT,
                   queue_wait_s: float = QUEUE_WAIT_S) -> web.Application:
    """The endpoint as an aiohttp app; the chDB engine opens on startup and closes on cleanup.

    The reader's password is created (or read) here, before anything listens.
    """
    app = web.Application()
    app[_STATE] = _State(
        engine=ChdbQueryEngine(chdb_path),
        limits=limits or ServerLimits(),
        queries=ThreadPoolExecutor(max_workers=max_concurrent, thread_name_prefix="aimeter-query"),
        control=ThreadPoolExecutor(max_workers=2, thread_name_prefix="aimeter-query-control"),
        slots=asyncio.Semaphore(max_concurrent),
        queue_wait_s=queue_wait_s,
        password=ensure_password(password_file_for(chdb_path)),
    )
    app.router.add_get("/", _handle_query)
    app.router.add_post("/", _handle_query)
    app.router.add_get("/ping", _handle_ping)
    app.on_startup.append(_open_engine)
    app.on_cleanup.append(_close_engine)
    return app


async def serve_queries(chdb_path: str, host: str, port: int, *, limits: ServerLimits | None = None,
                        max_concurrent: int = MAX_CONCURRENT, queue_wait_s: float = QUEUE_WAIT_S) -> web.AppRunner:
    """Start the endpoint on ``host:port`` (port 0 picks a free one, see ``runner.addresses``).

    Returns the started runner; the caller awaits ``runner.cleanup()`` to stop it. Handlers are
    cancelled when their client disconnects, which is what kills an abandoned query.
    """
    app = make_query_app(chdb_path, limits=limits, max_concurrent=max_concurrent, queue_wait_s=queue_wait_s)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_port = runner.addresses[0][1]
    app[_STATE].hosts = allowed_hosts(host, bound_port)
    return runner

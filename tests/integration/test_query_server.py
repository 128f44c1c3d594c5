"""The read-only ClickHouse HTTP endpoint over the embedded chDB engine.

One chDB engine per process, bound to one path: the tests here use the session's engine
(``chdb_client`` on ``chdb_path``, see tests/integration/chdb_fixture.py) with their own table
``t``, and an endpoint serving that directory, closed at module end.

The endpoint runs in pytest's session event loop; clickhouse-connect's HTTP client is
synchronous, so tests call it through ``asyncio.to_thread`` and the loop keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import clickhouse_connect
import pytest
import pytest_asyncio
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from aimeter.store.query_auth import READER_USER, password_file_for, read_password
from aimeter.store.query_request import QueryRequest
from aimeter.store.query_server import ChdbQueryEngine, serve_queries

pytestmark = pytest.mark.integration
# Async tests share the session loop, where the module's endpoint is serving.
on_server_loop = pytest.mark.asyncio(loop_scope="session")

COLUMNS = ["team", "cost_usd", "ts"]
ROWS = [
    ["search", Decimal("12345678901234567890123456.123456789012"), datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)],
    ["ads", Decimal("0.000000000001"), datetime(2025, 1, 2, 3, 4, 6, 1000, tzinfo=UTC)],
    ["it's \\ team\t1", Decimal("-7.500000000000"), datetime(2025, 6, 30, 23, 59, 59, 999000, tzinfo=UTC)],
]


@dataclass
class Store:
    path: Path
    client: Client
    scratch: Path

    def count(self) -> int:
        return int(self.client.command("SELECT count() FROM t"))


@dataclass
class Endpoint:
    port: int
    host: str
    password: str

    def client(self, **kwargs: object) -> Client:
        return clickhouse_connect.get_client(host="127.0.0.1", port=self.port, username=READER_USER,
                                             password=self.password, **kwargs)

    def get(self, path: str = "/", **params: str) -> tuple[int, dict[str, str], bytes]:
        url = f"http://127.0.0.1:{self.port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        return _fetch(urllib.request.Request(url, headers=self.auth))

    def post(self, body: str, **params: str) -> tuple[int, dict[str, str], bytes]:
        url = f"http://127.0.0.1:{self.port}/?" + urllib.parse.urlencode(params)
        return _fetch(urllib.request.Request(url, data=body.encode(), method="POST", headers=self.auth))

    @property
    def auth(self) -> dict[str, str]:
        return {"X-ClickHouse-User": READER_USER, "X-ClickHouse-Key": self.password}


def _fetch(request: urllib.request.Request) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


@pytest.fixture(scope="module")
def store(chdb_client: Client, chdb_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """The pricer's side: the in-process ChdbClient that owns the directory and inserts."""
    scratch = tmp_path_factory.mktemp("query_server")
    chdb_client.command(
        "CREATE TABLE t (team String, cost_usd Decimal(38, 12), ts DateTime64(3, 'UTC')) "
        "ENGINE = MergeTree ORDER BY (ts, team)"
    )
    chdb_client.insert("t", ROWS, column_names=COLUMNS)
    yield Store(chdb_path, chdb_client, scratch)
    chdb_client.command("DROP TABLE t")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def endpoint(store: Store) -> AsyncIterator[Endpoint]:
    runner = await serve_queries(str(store.path), "127.0.0.1", 0)
    host, port = runner.addresses[0][:2]
    yield Endpoint(port, host, read_password(password_file_for(store.path)))
    await runner.cleanup()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def http(endpoint: Endpoint) -> AsyncIterator[Client]:
    client = await asyncio.to_thread(endpoint.client, tz_mode="aware")
    yield client
    client.close()


@on_server_loop
async def test_binds_only_the_given_host_and_answers_ping(endpoint: Endpoint, http: Client) -> None:
    assert endpoint.host == "127.0.0.1"
    status, _, body = await asyncio.to_thread(endpoint.get, "/ping")
    assert (status, body) == (200, b"Ok.\n")
    status, _, body = await asyncio.to_thread(endpoint.get, "/")
    assert (status, body) == (200, b"Ok.\n")
    assert await asyncio.to_thread(http.ping)
    assert http.server_version == await asyncio.to_thread(http.command, "SELECT version()")


@on_server_loop
async def test_rows_keep_exact_decimals_and_aware_datetimes(http: Client, store: Store) -> None:
    sql = "SELECT team, cost_usd, ts FROM t ORDER BY ts"
    result = await asyncio.to_thread(http.query, sql)
    expected = sorted((tuple(row) for row in ROWS), key=lambda row: row[2])
    assert result.result_rows == expected
    assert all(row[2].tzinfo is not None and row[2].utcoffset().total_seconds() == 0 for row in result.result_rows)
    in_process = store.client.query(sql, tz_mode="aware").result_rows
    assert result.result_rows == in_process
    assert result.summary["read_rows"] == "3"


@on_server_loop
async def test_default_tz_mode_matches_a_real_server(endpoint: Endpoint) -> None:
    """clickhouse-connect's default returns UTC values naive, from a server or from here alike."""
    client = await asyncio.to_thread(endpoint.client)
    rows = await asyncio.to_thread(lambda: client.query("SELECT ts FROM t WHERE team = 'ads'").result_rows)
    assert rows == [(datetime(2025, 1, 2, 3, 4, 6, 1000),)]  # noqa: DTZ001 - naive is the point
    client.close()


@on_server_loop
async def test_server_side_parameters_bind(http: Client) -> None:
    def run() -> list[tuple]:
        tricky = http.query("SELECT cost_usd FROM t WHERE team = {team:String}", parameters={"team": ROWS[2][0]})
        typed = http.query(
            "SELECT team FROM t WHERE ts = {ts:DateTime64(3, 'UTC')} AND has({teams:Array(String)}, team)",
            parameters={"ts": ROWS[0][2], "teams": ["search", "x'y"]},
        )
        client_side = http.query("SELECT count() FROM t WHERE team = %(team)s", parameters={"team": "ads"})
        return [*tricky.result_rows, *typed.result_rows, *client_side.result_rows]

    assert await asyncio.to_thread(run) == [(ROWS[2][1],), ("search",), (1,)]


@on_server_loop
async def test_long_parameters_travel_as_a_multipart_form(endpoint: Endpoint) -> None:
    client = await asyncio.to_thread(endpoint.client, form_encode_query_params=True)
    teams = ["ads", *(f"team-{index}" for index in range(1000))]
    result = await asyncio.to_thread(
        client.query, "SELECT team FROM t WHERE has({teams:Array(String)}, team)", parameters={"teams": teams}
    )
    assert result.result_rows == [("ads",)]
    client.close()


@on_server_loop
async def test_command_returns_a_scalar(http: Client) -> None:
    assert await asyncio.to_thread(http.command, "SELECT count() FROM t") == len(ROWS)
    assert await asyncio.to_thread(http.command, "SELECT 'a', 'b'") == ["a", "b"]


@on_server_loop
async def test_curl_style_get_returns_tab_separated(endpoint: Endpoint) -> None:
    status, headers, body = await asyncio.to_thread(
        endpoint.get, query="SELECT team, cost_usd FROM t WHERE team IN ('ads', 'search') ORDER BY team"
    )
    assert status == 200
    assert body == b"ads\t0.000000000001\nsearch\t12345678901234567890123456.123456789012\n"
    assert headers["X-ClickHouse-Format"] == "TabSeparated"
    assert headers["Content-Type"].startswith("text/tab-separated-values")
    assert headers["X-ClickHouse-Timezone"]
    assert headers["X-ClickHouse-Query-Id"]
    summary = json.loads(headers["X-ClickHouse-Summary"])
    assert int(summary["read_rows"]) >= 2
    assert int(summary["result_bytes"]) == len(body)


@on_server_loop
async def test_format_clause_in_the_sql_wins(endpoint: Endpoint, http: Client) -> None:
    sql = "SELECT team, toString(cost_usd) AS cost FROM t WHERE team = 'ads' FORMAT JSONEachRow"
    status, headers, body = await asyncio.to_thread(endpoint.get, query=sql, default_format="CSV")
    assert status == 200
    assert headers["X-ClickHouse-Format"] == "JSONEachRow"
    assert json.loads(body) == {"team": "ads", "cost": "0.000000000001"}
    raw = await asyncio.to_thread(http.raw_query, "SELECT 1 AS x", fmt="JSONEachRow")
    assert json.loads(raw) == {"x": 1}


@on_server_loop
async def test_query_parameter_and_body_concatenate(endpoint: Endpoint) -> None:
    status, _, body = await asyncio.to_thread(endpoint.post, "count() FROM t", query="SELECT")
    assert (status, body) == (200, b"3\n")


@on_server_loop
async def test_database_default_format_and_allowed_settings(endpoint: Endpoint, http: Client) -> None:
    _, headers, body = await asyncio.to_thread(
        endpoint.get,
        query="SELECT currentDatabase(), getSetting('max_threads'), getSetting('session_timezone')",
        database="system",
        default_format="CSV",
        max_threads="1",
        session_timezone="Europe/Berlin",
    )
    assert (headers["X-ClickHouse-Format"], body) == ("CSV", b'"system",1,"Europe/Berlin"\n')
    _, _, body = await asyncio.to_thread(endpoint.get, query="SELECT currentDatabase(), getSetting('max_threads') = 1")
    assert body == b"default\t0\n", "settings and USE must not leak into the next request"


@on_server_loop
async def test_default_limits_stop_runaway_queries(endpoint: Endpoint) -> None:
    status, headers, body = await asyncio.to_thread(
        endpoint.get, query="SELECT number FROM system.numbers", max_result_rows="10"
    )
    assert status == 500
    assert headers["X-ClickHouse-Exception-Code"] == "396"
    assert b"TOO_MANY_ROWS_OR_BYTES" in body


WRITES = [
    "INSERT INTO t VALUES ('x', 1, now())",
    "insert into t select * from t",
    "DROP TABLE t",
    "TRUNCATE TABLE t",
    "ALTER TABLE t DELETE WHERE 1",
    "DELETE FROM t WHERE 1",
    "RENAME TABLE t TO t2",
    "CREATE TABLE t3 (a Int8) ENGINE = Memory",
    "CREATE TEMPORARY TABLE tmp (a Int8)",
    "OPTIMIZE TABLE t FINAL",
    "SYSTEM DROP DNS CACHE",
    "KILL QUERY WHERE 1",
    "SET max_threads = 1",
    "GRANT SELECT ON *.* TO somebody",
    "SELECT 1; DROP TABLE t",
    "SELECT 1 -- comment\n; DROP TABLE t",
    "SELECT 1 /* a /* nested */ comment */; DROP TABLE t",
    "SELECT 1 // comment\n; DROP TABLE t",
    "SELECT 1 PARALLEL WITH DROP TABLE t",
    "SELECT * FROM file('/etc/hostname', 'LineAsString')",
    "SELECT file('/etc/hostname')",
    "SELECT * FROM `file`('/etc/hostname', 'LineAsString')",
    "SELECT * FROM url('http://127.0.0.1:9/', 'LineAsString')",
    "SELECT * FROM s3('http://127.0.0.1:9/b/k', 'CSV')",
    "SELECT * FROM remote('127.0.0.1:9', system.one)",
    "SELECT * FROM executable('x.sh', 'TSV', 'a String')",
    "SELECT * FROM mysql('127.0.0.1:9', 'd', 't', 'u', 'p')",
    "SELECT * FROM postgresql('127.0.0.1:9', 'd', 't', 'u', 'p')",
    "SELECT * FROM hdfs('hdfs://127.0.0.1:9/x', 'TSV', 'a String')",
    "SELECT * FROM Python(ROWS)",
    "DESCRIBE TABLE file('/etc/hostname', 'LineAsString')",
    "WITH 1 AS x SELECT x FROM numbers(1) INTO OUTFILE '{scratch}/out.tsv'",
    "INSERT INTO FUNCTION file('{scratch}/out2.tsv', 'TSV') SELECT 1",
    "SELECT 1 $$ ; DROP TABLE t $$",
    "SELECT ‘x’",
    "USE system",
    "SHOW GRANTS",
    "CHECK TABLE t",
    "SELECT 1 SETTINGS max_execution_time = 0",
    "SELECT * FROM format(JSONEachRow, '{\"a\": 1}')",
    "SELECT formatRow('Template', 1)",
    "EXPLAIN INSERT INTO t SELECT * FROM t",
]


@pytest.mark.parametrize("sql", WRITES)
@on_server_loop
async def test_writes_and_escapes_are_refused(sql: str, http: Client, store: Store) -> None:
    sql = sql.replace("{scratch}", str(store.scratch))
    before = store.count()
    with pytest.raises(DatabaseError) as refused:
        await asyncio.to_thread(http.command, sql)
    assert refused.value.code == 164, str(refused.value)
    assert "READONLY" in str(refused.value)
    assert store.count() == before
    assert not list(store.scratch.glob("out*.tsv"))


@on_server_loop
async def test_client_insert_is_refused(http: Client, store: Store) -> None:
    before = store.count()
    with pytest.raises(DatabaseError) as refused:
        await asyncio.to_thread(http.insert, "t", ROWS, column_names=COLUMNS)
    assert refused.value.code == 164
    assert store.count() == before


@on_server_loop
async def test_readonly_answer_has_clickhouse_shape(endpoint: Endpoint) -> None:
    status, headers, body = await asyncio.to_thread(endpoint.post, "DROP TABLE t")
    assert status == 500
    assert headers["X-ClickHouse-Exception-Code"] == "164"
    assert body.startswith(b"Code: 164. DB::Exception: Cannot execute query in readonly mode")
    assert body.endswith(b")\n")


def test_engine_refuses_writes_even_without_the_gate(store: Store) -> None:
    """The second line of defence: every query's connection is readonly=1, whatever it asks."""
    engine = ChdbQueryEngine(str(store.path))
    info = engine.open()
    try:
        assert "file" in info.denied
        assert "numbers" not in info.denied
        assert {"template", "protobuf", "protobufsingle"} <= info.denied_formats
        for sql in (
            "INSERT INTO t VALUES ('x', 1, now())",
            "DROP TABLE t",
            "CREATE TABLE t4 (a Int8) ENGINE = Memory",
            "SELECT 1 SETTINGS readonly = 0",
            "SELECT 1 SETTINGS format_template_row = '/etc/passwd'",
            "SELECT * FROM url('http://127.0.0.1:9/', 'LineAsString')",
        ):
            with pytest.raises(RuntimeError, match=r"Code: 164\."):
                engine.execute(QueryRequest(sql))
        outcome = engine.execute(QueryRequest("SELECT getSetting('readonly')", settings={"readonly": "0"}))
        assert outcome.body == b"1\n"
    finally:
        engine.close()
    assert store.count() >= len(ROWS)


@on_server_loop
async def test_syntax_errors_carry_the_clickhouse_message(http: Client, endpoint: Endpoint) -> None:
    for sql in ("SELECT * FORM t", "SELEC 1", "SELECT 'unclosed"):
        with pytest.raises(DatabaseError) as failed:
            await asyncio.to_thread(http.query, sql)
        assert failed.value.code == 62, str(failed.value)
        assert "Syntax error" in str(failed.value)
    status, headers, _ = await asyncio.to_thread(endpoint.get, query="SELECT * FORM t")
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (400, "62")


@on_server_loop
async def test_unknown_table_is_a_404_with_code_60(endpoint: Endpoint) -> None:
    status, headers, body = await asyncio.to_thread(endpoint.get, query="SELECT * FROM missing_table")
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (404, "60")
    assert b"UNKNOWN_TABLE" in body


@on_server_loop
async def test_comments_and_odd_tokens_the_gate_accepts_run_as_clickhouse_reads_them(endpoint: Endpoint) -> None:
    queries = {
        "SELECT 1 /* a /* nested */ ; DROP TABLE t */ + 1": b"2\n",
        "SELECT 1 # comment ; DROP TABLE t\n + 1": b"2\n",
        "-- leading comment\nSELECT 'a;b' AS `weird;name`": b"a;b\n",
        "SELECT 'it''s', \"team\" FROM t WHERE team = 'ads';": b"it\\'s\tads\n",
        "SELECT count() FROM t FORMAT TSV;": b"3\n",
    }
    for sql, expected in queries.items():
        status, _, body = await asyncio.to_thread(endpoint.post, sql)
        assert (status, body) == (200, expected), sql


@on_server_loop
async def test_rows_inserted_after_start_are_visible(http: Client, store: Store) -> None:
    store.client.insert("t", [["late", Decimal("1.5"), datetime(2026, 1, 1, tzinfo=UTC)]], column_names=COLUMNS)
    result = await asyncio.to_thread(http.query, "SELECT cost_usd FROM t WHERE team = 'late'")
    assert result.result_rows == [(Decimal("1.500000000000"),)]


@on_server_loop
async def test_concurrent_queries_and_inserts(endpoint: Endpoint, store: Store) -> None:
    stop = threading.Event()
    inserted = 0

    def insert_until_stopped() -> None:
        nonlocal inserted
        while not stop.is_set():
            store.client.insert("t", [["burst", Decimal(1), datetime.now(UTC)]], column_names=COLUMNS)
            inserted += 1

    def query_many() -> list[int]:
        client = endpoint.client()
        counts = [int(client.command("SELECT count() FROM t WHERE team = 'burst'")) for _ in range(25)]
        client.close()
        return counts

    writer = threading.Thread(target=insert_until_stopped)
    writer.start()
    try:
        results = await asyncio.gather(*(asyncio.to_thread(query_many) for _ in range(6)))
    finally:
        stop.set()
        writer.join()
    assert all(counts == sorted(counts) for counts in results), "a reader saw rows disappear"
    final = await asyncio.to_thread(endpoint.get, query="SELECT count() FROM t WHERE team = 'burst'")
    assert final[2] == f"{inserted}\n".encode()


@on_server_loop
async def test_slow_query_does_not_block_the_event_loop(endpoint: Endpoint) -> None:
    slow = asyncio.create_task(asyncio.to_thread(endpoint.get, query="SELECT sleep(2)"))
    await asyncio.sleep(0.3)
    started = time.monotonic()
    status, _, _ = await asyncio.to_thread(endpoint.get, "/ping")
    assert status == 200
    assert time.monotonic() - started < 1.0
    assert (await slow)[0] == 200



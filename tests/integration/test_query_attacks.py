"""The query endpoint, attacked: files, credentials, browsers and limits.

Written as an attacker would try it: every output format that takes a schema or template file,
through both settings channels (a SETTINGS clause and URL parameters), over GET, POST and a
multipart form, spelled the ways ClickHouse's parser accepts; then Hypothesis-generated queries
that must never create, change or disclose a file outside the data dir. The endpoint runs on
its own thread and event loop, so the tests are plain synchronous HTTP clients.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import itertools
import json
import os
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aimeter.store.query_auth import READER_USER, ensure_password, password_file_for, read_password
from aimeter.store.query_request import ServerLimits
from aimeter.store.query_server import serve_queries

pytestmark = pytest.mark.integration

SECRET = "SECRET-" + uuid.uuid4().hex
SLOW = "SELECT count() FROM numbers(100000000000) WHERE sipHash64(number) = 0"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def code(self) -> str:
        return self.headers.get("X-ClickHouse-Exception-Code", "")


class ThreadedEndpoint:
    """serve_queries on a loop of its own, so synchronous tests can talk to it."""

    def __init__(self, path: Path, **options: object) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        future = asyncio.run_coroutine_threadsafe(serve_queries(str(path), "127.0.0.1", 0, **options), self.loop)
        self.runner = future.result(60)
        self.port = self.runner.addresses[0][1]
        self.password = read_password(password_file_for(path))

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    @property
    def auth(self) -> dict[str, str]:
        token = base64.b64encode(f"{READER_USER}:{self.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def request(self, method: str, path: str = "/", body: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 60) -> Answer:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=headers if headers is not None else self.auth)
            response = connection.getresponse()
            return Answer(response.status, dict(response.getheaders()), response.read())
        finally:
            connection.close()

    def get(self, sql: str, headers: dict[str, str] | None = None, **params: str) -> Answer:
        return self.request("GET", "/?" + urllib.parse.urlencode({"query": sql, **params}), headers=headers)

    def post(self, sql: str, headers: dict[str, str] | None = None, **params: str) -> Answer:
        query = "/?" + urllib.parse.urlencode(params) if params else "/"
        return self.request("POST", query, sql.encode(), {**self.auth, **(headers or {})})

    def form(self, sql: str, **params: str) -> Answer:
        boundary = "aimeter" + uuid.uuid4().hex
        fields = {"query": sql, **params}
        body = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
                       for name, value in fields.items()) + f"--{boundary}--\r\n"
        headers = {**self.auth, "Content-Type": f"multipart/form-data; boundary={boundary}"}
        return self.request("POST", "/", body.encode(), headers)

    def scalar(self, sql: str) -> str:
        answer = self.post(sql)
        assert answer.status == 200, answer.body
        return answer.body.decode().strip()


@dataclass
class Files:
    """Everything outside the data dir an attack could touch: a secret, a keys file, a site dir."""

    scratch: Path
    secret: Path
    keys: Path

    def snapshot(self) -> dict[str, bytes]:
        seen = {}
        for root in (self.scratch, Path.cwd()):
            for path in root.rglob("*") if root == self.scratch else root.iterdir():
                if path.is_file():
                    seen[str(path)] = path.read_bytes() if root == self.scratch else str(path.stat().st_mtime).encode()
        return seen


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    scratch = tmp_path_factory.mktemp("attack_targets")
    secret = scratch / "secret.txt"
    secret.write_text(f"{SECRET}\n")
    keys = scratch / "keys.json"
    keys.write_text(json.dumps({"keys": [{"id": "k1", "hash": SECRET}]}))
    (scratch / "site-packages").mkdir()
    return Files(scratch, secret, keys)


@pytest.fixture(scope="module")
def table(chdb_client: Client) -> Iterator[str]:
    chdb_client.command("CREATE TABLE attack_t (team String, n UInt64) ENGINE = MergeTree ORDER BY team")
    chdb_client.insert("attack_t", [["search", 1], ["ads", 2]], column_names=["team", "n"])
    yield "attack_t"
    chdb_client.command("DROP TABLE attack_t")


@pytest.fixture(scope="module")
def endpoint(chdb_path: Path, table: str) -> Iterator[ThreadedEndpoint]:
    served = ThreadedEndpoint(chdb_path)
    yield served
    served.stop()


@pytest.fixture(scope="module")
def tight(chdb_path: Path, table: str) -> Iterator[ThreadedEndpoint]:
    """An endpoint with small server limits, to see them hold."""
    served = ThreadedEndpoint(chdb_path, limits=ServerLimits(max_execution_time_s=3, max_memory_usage_bytes=64 * 2**20,
                                                             max_result_bytes=2**20), max_concurrent=2, queue_wait_s=2)
    yield served
    served.stop()


def refused(answer: Answer) -> bool:
    return answer.status >= 400 and SECRET.encode() not in answer.body


# -- 1. file writes and reads through formats and settings ------------------------------------------

FILE_FORMATS = ["Template", "TemplateIgnoreSpaces", "Protobuf", "ProtobufSingle", "ProtobufList", "CustomSeparated",
                "CapnProto", "Regexp"]
SPELLINGS = ["{f}", "{lower}", "`{f}`", "/* c */ {f}", '"{f}"']


def file_settings(files: Files) -> dict[str, str]:
    target = files.scratch / "site-packages" / "evil.pth"
    return {
        "format_schema": f"{target}:Message",
        "output_format_schema": str(target),
        "format_template_row": str(files.secret),
        "format_template_resultset": str(files.keys),
        "format_template_rows_between_delimiter": str(files.secret),
        "format_schema_path": str(files.scratch),
    }


def test_file_formats_times_settings_channels_and_methods_are_refused(endpoint: ThreadedEndpoint, files: Files) -> None:
    before = files.snapshot()
    spellings = itertools.cycle(SPELLINGS)
    tried = 0
    for fmt, (name, value), channel, method in itertools.product(
        FILE_FORMATS, file_settings(files).items(), ("clause", "url"), ("get", "post", "form")
    ):
        spelled = next(spellings).format(f=fmt, lower=fmt.lower())
        sql = f"SELECT team, n FROM attack_t FORMAT {spelled}"
        params: dict[str, str] = {}
        if channel == "clause":
            sql += f" SETTINGS {name} = '{value}'"
        else:
            params[name] = value
        answer = getattr(endpoint, method)(sql, **params)
        assert refused(answer), (sql, params, method, answer)
        tried += 1
    assert tried == len(FILE_FORMATS) * 6 * 2 * 3
    assert files.snapshot() == before


@pytest.mark.parametrize("fmt", FILE_FORMATS)
def test_file_formats_as_default_format_are_refused(endpoint: ThreadedEndpoint, files: Files, fmt: str) -> None:
    before = files.snapshot()
    for name, value in file_settings(files).items():
        answer = endpoint.get("SELECT team FROM attack_t", default_format=fmt, **{name: value})
        assert refused(answer), answer
        assert answer.code in ("73", "115"), answer
    assert files.snapshot() == before


READS = [
    "SELECT * FROM file('{secret}', 'LineAsString')",
    "SELECT file('{secret}')",
    "SELECT `FiLe`('{secret}')",
    "SELECT * FROM `file`('{secret}', 'LineAsString')",
    "SELECT * FROM url('file://{secret}', 'LineAsString')",
    "SELECT * FROM format(LineAsString, '{secret}')",
    "SELECT formatRow('Template', 1) SETTINGS format_template_row = '{secret}'",
    "DESCRIBE TABLE file('{secret}', 'LineAsString')",
    "SELECT * FROM (SELECT file('{secret}') AS x)",
    "WITH file('{secret}') AS x SELECT x",
    "SELECT 1 FROM attack_t WHERE team IN (SELECT file('{secret}'))",
    "EXPLAIN SELECT file('{secret}')",
]
WRITES = [
    "SELECT 1 INTO OUTFILE '{out}'",
    "SELECT 1 into/**/outfile '{out}' FORMAT TSV",
    "SHOW TABLES INTO OUTFILE '{out}'",
    "DESCRIBE attack_t INTO OUTFILE '{out}' TRUNCATE",
    "EXISTS TABLE attack_t INTO OUTFILE '{out}' APPEND",
    "INSERT INTO FUNCTION file('{out}', 'TSV') SELECT 1",
    "SELECT 1 FORMAT Template SETTINGS format_template_resultset = '{out}'",
]


@pytest.mark.parametrize("sql", READS + WRITES)
def test_reads_and_writes_outside_the_data_dir_are_refused(endpoint: ThreadedEndpoint, files: Files, sql: str) -> None:
    before = files.snapshot()
    sql = sql.format(secret=files.secret, out=files.scratch / "site-packages" / "out.pth")
    for answer in (endpoint.get(sql), endpoint.post(sql), endpoint.form(sql)):
        assert refused(answer), (sql, answer)
    assert files.snapshot() == before


# Building blocks an attacker recombines: file-touching calls and clauses, comments, case, quoting.
_CALLS = st.sampled_from(["file", "FILE", "`file`", '"file"', "url", "s3", "format", "formatRow", "remote",
                          "executable", "python", "input", "numbers", "generateRandom"])
_GAPS = st.sampled_from([" ", "\n", "/**/", " /* ; */ ", " -- x\n", "\t"])
_TAILS = st.sampled_from(["", " INTO OUTFILE '{out}'", " FORMAT Template", " FORMAT Protobuf", " FORMAT `Template`",
                          " SETTINGS format_schema = '{out}:M'", " SETTINGS format_template_row = '{secret}'",
                          " SETTINGS max_execution_time = 0", " FORMAT JSON", " ; SELECT file('{secret}')",
                          " PARALLEL WITH SELECT file('{secret}')"])
_HEADS = st.sampled_from(["SELECT", "WITH 1 AS x SELECT", "EXPLAIN SELECT", "SELECT * FROM (SELECT",
                          "DESCRIBE (SELECT"])


@st.composite
def hostile_queries(draw: st.DrawFn) -> tuple[str, str]:
    head, gap, call, tail = draw(_HEADS), draw(_GAPS), draw(_CALLS), draw(_TAILS)
    argument = draw(st.sampled_from(["'{secret}'", "'{secret}', 'LineAsString'", "'{out}', 'TSV'", "1", ""]))
    closing = ")" * head.count("(")
    return f"{head}{gap}{call}({argument}){gap}{closing}{tail}", draw(st.sampled_from(["get", "post", "form"]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hostile_queries())
def test_generated_queries_never_touch_files_outside_the_data_dir(endpoint: ThreadedEndpoint, files: Files,
                                                                  query: tuple[str, str]) -> None:
    template, method = query
    before = files.snapshot()
    sql = template.format(secret=files.secret, out=files.scratch / "site-packages" / "gen.pth")
    answer = getattr(endpoint, method)(sql)
    assert SECRET.encode() not in answer.body, sql
    assert files.snapshot() == before, sql


# -- 2. authentication ----------------------------------------------------------------------------------


def test_every_request_needs_the_readers_password(endpoint: ThreadedEndpoint) -> None:
    sql = "SELECT count() FROM attack_t"
    no_auth = endpoint.get(sql, headers={})
    assert (no_auth.status, no_auth.code) == (401, "194")
    wrong = endpoint.get(sql, headers={"X-ClickHouse-User": READER_USER, "X-ClickHouse-Key": "guess"})
    assert (wrong.status, wrong.code) == (403, "516")
    default_user = endpoint.get(sql, headers={"X-ClickHouse-User": "default", "X-ClickHouse-Key": endpoint.password})
    assert default_user.status == 403
    plain_post = endpoint.request("POST", "/", sql.encode(), {"Content-Type": "text/plain"})
    assert plain_post.status == 401
    # The three ways ClickHouse takes a credential all work.
    assert endpoint.get(sql).body == b"2\n"
    keyed = {"X-ClickHouse-User": READER_USER, "X-ClickHouse-Key": endpoint.password}
    assert endpoint.get(sql, headers=keyed).body == b"2\n"
    assert endpoint.get(sql, headers={}, user=READER_USER, password=endpoint.password).body == b"2\n"


def test_password_file_is_private_and_refused_when_it_is_not(tmp_path: Path, chdb_path: Path,
                                                              endpoint: ThreadedEndpoint) -> None:
    assert os.stat(password_file_for(chdb_path)).st_mode & 0o777 == 0o600
    path = tmp_path / "query_password"
    first = ensure_password(path)
    assert len(first) >= 32
    assert ensure_password(path) == first
    path.chmod(0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        ensure_password(path)


# -- 3. browsers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Host": "evil.example"},
        {"Host": "rebound.attacker.example:{port}"},
        {"Host": "127.0.0.1:1"},
    ],
)
def test_browsers_and_foreign_hosts_are_refused_even_with_the_password(endpoint: ThreadedEndpoint,
                                                                       extra: dict[str, str]) -> None:
    headers = {**endpoint.auth, **{k: v.format(port=endpoint.port) for k, v in extra.items()}}
    for path in ("/?query=SELECT+1", "/ping"):
        answer = endpoint.request("GET", path, headers=headers)
        assert (answer.status, answer.code) == (403, "497"), (extra, answer)
    assert endpoint.request("POST", "/", b"SELECT 1", headers).status == 403


def test_loopback_names_are_this_endpoint(endpoint: ThreadedEndpoint) -> None:
    for host in ("127.0.0.1", "localhost", "LOCALHOST"):
        headers = {**endpoint.auth, "Host": f"{host}:{endpoint.port}"}
        answer = endpoint.request("GET", "/?query=SELECT+1", headers=headers)
        assert answer.body == b"1\n", host


# -- 4. limits the client cannot raise ------------------------------------------------------------------


def test_client_cannot_raise_or_remove_the_servers_limits(tight: ThreadedEndpoint) -> None:
    read = "SELECT getSetting('max_execution_time'), getSetting('max_result_bytes')"
    for asked in ("0", "99999999"):
        answer = tight.get(read, max_execution_time=asked, max_result_bytes=asked)
        assert answer.body == b"3\t1048576\n", asked
    assert tight.get(read, max_execution_time="1", max_result_bytes="100").body == b"1\t100\n"
    for name in ("max_memory_usage", "max_bytes_before_external_group_by", "format_schema", "allow_ddl"):
        answer = tight.get("SELECT 1", **{name: "0"})
        assert answer.status == 404, (name, answer)
        assert answer.code == "115", (name, answer)
    assert tight.get("SELECT getSetting('readonly')", readonly="0").body == b"1\n"
    answer = tight.post("SELECT 1 SETTINGS max_execution_time = 0")
    assert answer.code == "164"


def test_time_memory_and_result_size_are_capped(tight: ThreadedEndpoint) -> None:
    started = time.monotonic()
    timed_out = tight.post(SLOW)
    assert timed_out.code == "159", timed_out
    assert time.monotonic() - started < 30
    memory = tight.post("SELECT length(groupArray(number)) FROM numbers(100000000)")
    assert memory.code == "241", memory
    result = tight.post("SELECT repeat('x', 100) FROM numbers(20000)")
    assert result.code == "396", result


def _processes(endpoint: ThreadedEndpoint, marker: str) -> int:
    return int(endpoint.scalar(f"SELECT count() FROM system.processes WHERE query LIKE '%{marker}%' "
                               "AND query NOT LIKE '%system.processes%'"))


def _abandon(endpoint: ThreadedEndpoint, marker: str) -> None:
    body = f"{SLOW} -- {marker}".encode()
    token = endpoint.auth["Authorization"]
    head = (f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{endpoint.port}\r\nAuthorization: {token}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", endpoint.port), timeout=5) as raw:
        raw.sendall(head + body)
        time.sleep(0.5)


def _wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_a_query_whose_client_hangs_up_is_killed(endpoint: ThreadedEndpoint) -> None:
    markers = [uuid.uuid4().hex for _ in range(4)]
    for marker in markers:  # as many as there are slots: before, these blocked all reporting
        _abandon(endpoint, marker)
    assert _wait_for(lambda: all(_processes(endpoint, marker) == 0 for marker in markers), 10)
    started = time.monotonic()
    assert endpoint.scalar("SELECT count() FROM attack_t") == "2"
    assert time.monotonic() - started < 5


@pytest.fixture
def running(chdb_client: Client) -> Callable[[], int]:
    """How many slow attack queries the engine runs now, read on the owner's side (takes no slot)."""
    return lambda: int(chdb_client.command(
        "SELECT count() FROM system.processes WHERE query LIKE '%sipHash64(number) = 0%' "
        "AND query NOT LIKE '%system.processes%'"))


def test_extra_queries_wait_for_a_slot_then_get_a_clear_503(tight: ThreadedEndpoint,
                                                             running: Callable[[], int]) -> None:
    results: list[Answer] = []
    threads = [threading.Thread(target=lambda: results.append(tight.post(SLOW))) for _ in range(2)]
    for thread in threads:
        thread.start()
    assert _wait_for(lambda: running() >= 2, 10)
    busy = tight.post("SELECT 1")
    assert (busy.status, busy.code) == (503, "202"), busy
    for thread in threads:
        thread.join(30)
    assert [answer.code for answer in results] == ["159", "159"]
    assert tight.post("SELECT 1").body == b"1\n"


def test_ingestion_does_not_wait_for_report_queries(endpoint: ThreadedEndpoint, chdb_client: Client,
                                                    running: Callable[[], int]) -> None:
    threads = [threading.Thread(target=endpoint.post, args=(f"{SLOW} -- {uuid.uuid4().hex}",), daemon=True)
               for _ in range(4)]
    for thread in threads:
        thread.start()
    assert _wait_for(lambda: running() >= 4, 10)
    started = time.monotonic()
    chdb_client.insert("attack_t", [["ingest", 3]], column_names=["team", "n"])
    inserted_in = time.monotonic() - started
    still_running = running()
    chdb_client.command("KILL QUERY WHERE query LIKE '%sipHash64(number) = 0%' SYNC")
    for thread in threads:
        thread.join(30)
    assert still_running >= 4, "the reports ended before the insert: the test proved nothing"
    assert inserted_in < 10
    chdb_client.command("ALTER TABLE attack_t DELETE WHERE team = 'ingest' SETTINGS mutations_sync = 1")

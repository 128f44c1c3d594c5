"""`aimeter grafana push` against a test double of Grafana's HTTP API (Grafana is an external system).

The double implements only what grafana-client calls for a push (folders, datasources by uid,
dashboards by uid and /api/dashboards/db), answering in Grafana's shapes: 404 for a missing object,
server-assigned ids and versions, the datasource password never echoed back (only secureJsonFields).
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from grafana_client import GrafanaApi

from aimeter.cli import main
from aimeter.grafana.build import load_dashboards
from aimeter.grafana.push import clickhouse_variables, datasource_definition, push

TOKEN = "glsa_test_token"
CLICKHOUSE = "http://grafana_reader:s3cret@clickhouse:8123/default"


class FakeGrafana:
    """State and a request log; ``writes`` are the POST/PUT requests."""

    def __init__(self) -> None:
        self.folders: dict[str, dict[str, Any]] = {}
        self.datasources: dict[str, dict[str, Any]] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}
        self.log: list[tuple[str, str, Any]] = []

    @property
    def writes(self) -> list[tuple[str, str, Any]]:
        return [entry for entry in self.log if entry[0] in {"POST", "PUT"}]

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        self.log.append((method, path, body))
        parts = path.removeprefix("/api/").split("/")
        routes = {
            ("GET", "folders"): lambda: self._get(self.folders, parts[1]),
            ("POST", "folders"): lambda: self._create_folder(body),
            ("PUT", "folders"): lambda: self._update_folder(parts[1], body),
            ("GET", "datasources"): lambda: self._get_datasource(parts[2]),
            ("POST", "datasources"): lambda: self._put_datasource(body["uid"], body),
            ("PUT", "datasources"): lambda: self._put_datasource(parts[2], body),
            ("GET", "dashboards"): lambda: self._get(self.dashboards, parts[2]),
            ("POST", "dashboards"): lambda: self._save_dashboard(body),
        }
        route = routes.get((method, parts[0]))
        return route() if route else (404, {"message": "Not found"})

    @staticmethod
    def _get(store: dict[str, Any], uid: str) -> tuple[int, Any]:
        return (200, copy.deepcopy(store[uid])) if uid in store else (404, {"message": "not found"})

    def _create_folder(self, body: dict[str, Any]) -> tuple[int, Any]:
        self.folders[body["uid"]] = {"id": len(self.folders) + 1, "uid": body["uid"], "title": body["title"],
                                     "version": 1}
        return 200, self.folders[body["uid"]]

    def _update_folder(self, uid: str, body: dict[str, Any]) -> tuple[int, Any]:
        self.folders[uid] |= {"title": body["title"], "version": self.folders[uid]["version"] + 1}
        return 200, self.folders[uid]

    def _get_datasource(self, uid: str) -> tuple[int, Any]:
        if uid not in self.datasources:
            return 404, {"message": "Data source not found"}
        stored = copy.deepcopy(self.datasources[uid])
        secure = stored.pop("secureJsonData", {})
        return 200, stored | {"secureJsonFields": dict.fromkeys(secure, True)}

    def _put_datasource(self, uid: str, body: dict[str, Any]) -> tuple[int, Any]:
        self.datasources[uid] = {"id": 7, "orgId": 1, "basicAuth": False, "readOnly": False, **copy.deepcopy(body)}
        return 200, {"datasource": {"uid": uid}, "id": 7, "message": "Datasource saved"}

    def _save_dashboard(self, body: dict[str, Any]) -> tuple[int, Any]:
        dashboard = copy.deepcopy(body["dashboard"])
        previous = self.dashboards.get(dashboard["uid"], {"dashboard": {"version": 0}})["dashboard"]
        dashboard |= {"id": 40 + len(self.dashboards), "version": previous["version"] + 1}
        self.dashboards[dashboard["uid"]] = {"dashboard": dashboard,
                                             "meta": {"folderUid": body["folderUid"], "provisioned": False}}
        return 200, {"status": "success", "uid": dashboard["uid"], "version": dashboard["version"]}


def _handler(grafana: FakeGrafana) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                status, answer = 401, {"message": "Unauthorized"}
            else:
                status, answer = grafana.handle(self.command, self.path.split("?")[0], body)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = _serve  # noqa: N815 - BaseHTTPRequestHandler's naming

        def log_message(self, *_args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def grafana() -> Iterator[tuple[FakeGrafana, str]]:
    fake = FakeGrafana()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def api(url: str) -> GrafanaApi:
    return GrafanaApi.from_url(url, credential=TOKEN)


DATASOURCE = datasource_definition(clickhouse_variables(CLICKHOUSE))


def test_first_push_creates_everything_and_the_second_writes_nothing(grafana):
    fake, url = grafana
    first = push(api(url), DATASOURCE)
    assert set(first.actions.values()) == {"created"}
    assert len(first.actions) == 2 + len(load_dashboards())
    assert fake.datasources["aimeter-clickhouse"]["jsonData"] == {
        "host": "clickhouse", "port": 8123, "protocol": "http", "secure": False, "username": "grafana_reader",
        "defaultDatabase": "default"}
    assert fake.datasources["aimeter-clickhouse"]["secureJsonData"] == {"password": "s3cret"}
    assert {d["meta"]["folderUid"] for d in fake.dashboards.values()} == {"aimeter"}
    writes = len(fake.writes)

    second = push(api(url), DATASOURCE)
    assert set(second.actions.values()) == {"unchanged"}
    assert second.writes == 0
    assert len(fake.writes) == writes, "a second push must not write"
    assert all(d["dashboard"]["version"] == 1 for d in fake.dashboards.values())


def test_only_what_changed_is_written(grafana):
    fake, url = grafana
    push(api(url), DATASOURCE)
    fake.dashboards["aimeter-chargeback"]["dashboard"]["title"] = "edited in the UI"
    fake.folders["aimeter"]["title"] = "renamed"
    before = len(fake.writes)
    report = push(api(url), DATASOURCE)
    assert {k: v for k, v in report.actions.items() if v != "unchanged"} == {
        "folder aimeter": "updated", "dashboard aimeter-chargeback": "updated"}
    assert [w[1] for w in fake.writes[before:]] == ["/api/folders/aimeter", "/api/dashboards/db"]
    assert fake.dashboards["aimeter-chargeback"]["dashboard"]["title"] == "Chargeback"


def test_a_new_clickhouse_address_updates_the_datasource(grafana):
    fake, url = grafana
    push(api(url), DATASOURCE)
    moved = datasource_definition(clickhouse_variables("https://grafana_reader:s3cret@ch.example:8443/metering"))
    assert push(api(url), moved).actions["datasource aimeter-clickhouse"] == "updated"
    assert fake.datasources["aimeter-clickhouse"]["jsonData"]["port"] == 8443
    assert fake.datasources["aimeter-clickhouse"]["jsonData"]["secure"] is True


def test_the_cli_pushes_with_a_token_file(grafana, tmp_path, capsys):
    _fake, url = grafana
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    assert main(["grafana", "push", "--url", url, "--token-file", str(token), "--clickhouse-url", CLICKHOUSE]) == 0
    assert main(["grafana", "push", "--url", url, "--token", TOKEN, "--clickhouse-url", CLICKHOUSE]) == 0
    out = capsys.readouterr().out
    assert "grafana push: 6 write(s)" in out  # folder, datasource, four dashboards
    assert "grafana push: 0 write(s)" in out
    assert main(["grafana", "push", "--url", url, "--token", "wrong", "--clickhouse-url", CLICKHOUSE]) == 1
    assert "answered 401" in capsys.readouterr().err


def test_the_cli_refuses_an_embedded_store(capsys):
    assert main(["grafana", "push", "--url", "http://127.0.0.1:9", "--token", "t",
                 "--clickhouse-url", "chdb:///tmp/x"]) == 2
    assert "needs a ClickHouse server" in capsys.readouterr().err


def test_a_rotated_password_reaches_grafana_only_with_rotate_password(grafana):
    """Grafana never echoes a stored password, so a plain push cannot see that it changed."""
    fake, url = grafana
    push(api(url), DATASOURCE)
    rotated = datasource_definition(clickhouse_variables("http://grafana_reader:n3w-s3cret@clickhouse:8123/default"))
    assert push(api(url), rotated).actions["datasource aimeter-clickhouse"] == "unchanged"
    assert fake.datasources["aimeter-clickhouse"]["secureJsonData"] == {"password": "s3cret"}  # still the old one
    report = push(api(url), rotated, rotate_password=True)
    assert {k: v for k, v in report.actions.items() if v != "unchanged"} == {"datasource aimeter-clickhouse": "updated"}
    assert fake.datasources["aimeter-clickhouse"]["secureJsonData"] == {"password": "n3w-s3cret"}


def test_the_cli_rotates_the_password_from_the_separate_settings(grafana, tmp_path, monkeypatch, capsys):
    fake, url = grafana
    assert main(["grafana", "push", "--url", url, "--token", TOKEN, "--clickhouse-url", CLICKHOUSE]) == 0
    secret = tmp_path / "reader_password"
    secret.write_text("r0tated:@/#?%\n", encoding="utf-8")
    monkeypatch.setenv("AIMETER_CLICKHOUSE_URL", "http://clickhouse:8123/default")
    monkeypatch.setenv("AIMETER_CLICKHOUSE_USER", "aimeter_reader")
    monkeypatch.setenv("AIMETER_CLICKHOUSE_PASSWORD_FILE", str(secret))
    capsys.readouterr()
    assert main(["grafana", "push", "--url", url, "--token", TOKEN, "--rotate-password"]) == 0
    assert "updated    datasource aimeter-clickhouse" in capsys.readouterr().out
    stored = fake.datasources["aimeter-clickhouse"]
    assert stored["secureJsonData"] == {"password": "r0tated:@/#?%"}
    assert stored["jsonData"]["username"] == "aimeter_reader"


def test_rotate_password_without_a_password_is_refused(grafana):
    _fake, url = grafana
    without = datasource_definition(clickhouse_variables("http://grafana_reader@clickhouse:8123/default"))
    with pytest.raises(ValueError, match="needs a password"):
        push(api(url), without, rotate_password=True)


def test_the_prometheus_datasource_of_gateway_health_is_pushed_when_asked(grafana, tmp_path, capsys):
    fake, url = grafana
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    args = ["grafana", "push", "--url", url, "--token-file", str(token), "--clickhouse-url", CLICKHOUSE,
            "--prometheus-url", "http://prometheus:9090/"]
    assert main(args) == 0
    assert fake.datasources["aimeter-prometheus"]["type"] == "prometheus"
    assert fake.datasources["aimeter-prometheus"]["url"] == "http://prometheus:9090"
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "created    datasource aimeter-prometheus" in out
    assert "unchanged  datasource aimeter-prometheus" in out
    assert "grafana push: 0 write(s)" in out
    assert main([*args[:-1], "prometheus:9090"]) == 2
    assert "--prometheus-url must be http(s)://host:port" in capsys.readouterr().err

"""ClickHouse server credentials as separate settings: any password reaches the server intact, none is logged."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from aimeter.settings import SettingsError, load_settings
from aimeter.store.client import get_client, redact, with_credentials

HOSTILE = "p@ss:w/o#r?d%25 &=+'\"\\"  # every character that breaks a hand-written URL, and then some


@pytest.fixture
def clickhouse_door() -> Iterator[tuple[list[tuple[str, str]], str]]:
    """An HTTP server that records the credentials a client presents and refuses them (as ClickHouse does: 516)."""
    seen: list[tuple[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            basic = self.headers.get("Authorization", "")
            if basic.startswith("Basic "):
                user, _, password = base64.b64decode(basic[6:]).decode().partition(":")
                seen.append((user, password))
            elif self.headers.get("X-ClickHouse-User"):
                seen.append((self.headers["X-ClickHouse-User"], self.headers.get("X-ClickHouse-Key", "")))
            body = b"Code: 516. DB::Exception: Authentication failed. (AUTHENTICATION_FAILED)"
            self.send_response(403)
            self.send_header("X-ClickHouse-Exception-Code", "516")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _serve  # noqa: N815 - BaseHTTPRequestHandler's naming

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield seen, f"http://127.0.0.1:{server.server_address[1]}/default"
    finally:
        server.shutdown()
        server.server_close()


def test_a_hostile_password_from_a_file_reaches_the_server_intact(clickhouse_door, tmp_path: Path, monkeypatch):
    seen, url = clickhouse_door
    secret = tmp_path / "clickhouse_password"
    secret.write_text(HOSTILE + "\n", encoding="utf-8")
    monkeypatch.setenv("AIMETER_CLICKHOUSE_URL", url)
    monkeypatch.setenv("AIMETER_CLICKHOUSE_USER", "aimeter_writer")
    monkeypatch.setenv("AIMETER_CLICKHOUSE_PASSWORD_FILE", str(secret))
    with pytest.raises(Exception, match=r"516|Authentication"):
        get_client(load_settings().resolved_clickhouse_url)
    assert seen
    assert set(seen) == {("aimeter_writer", HOSTILE)}


def test_the_password_setting_overrides_the_urls_own(clickhouse_door, monkeypatch):
    seen, url = clickhouse_door
    monkeypatch.setenv("AIMETER_CLICKHOUSE_URL", url.replace("http://", "http://old:stale@"))
    monkeypatch.setenv("AIMETER_CLICKHOUSE_PASSWORD", HOSTILE)
    settings = load_settings()
    assert HOSTILE not in repr(settings)  # a secret field: repr and logs of the settings never show it
    with pytest.raises(Exception, match=r"516|Authentication"):
        get_client(settings.resolved_clickhouse_url)
    assert set(seen) == {("old", HOSTILE)}


def test_no_credentials_leave_the_url_as_written(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("AIMETER_CLICKHOUSE_URL", "https://reader:pw@ch.example:8443/metering")
    assert load_settings().resolved_clickhouse_url == "https://reader:pw@ch.example:8443/metering"
    monkeypatch.delenv("AIMETER_CLICKHOUSE_URL")
    monkeypatch.setenv("AIMETER_CLICKHOUSE_USER", "ignored")  # the embedded engine has no users
    assert load_settings(data_dir=tmp_path).resolved_clickhouse_url.startswith("chdb://")


def test_a_missing_password_file_is_a_settings_error(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("AIMETER_CLICKHOUSE_PASSWORD_FILE", str(tmp_path / "absent"))
    with pytest.raises(SettingsError, match="AIMETER_CLICKHOUSE_PASSWORD_FILE"):
        load_settings()


@pytest.mark.parametrize(("url", "shown"), [
    (with_credentials("http://clickhouse:8123/default", "aimeter_writer", HOSTILE),
     "http://aimeter_writer:***@clickhouse:8123/default"),
    ("https://u:secret@[::1]:8443/db?password=x", "https://u:***@[::1]:8443/db"),
    ("http://clickhouse:8123/default", "http://clickhouse:8123/default"),
    ("chdb:///var/lib/aimeter/chdb", "chdb:///var/lib/aimeter/chdb"),
])
def test_redact_never_shows_a_password(url, shown):
    assert redact(url) == shown
    assert "secret" not in redact(url)
    assert "p%40ss" not in redact(url)

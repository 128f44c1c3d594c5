"""ClickHouse client factory: ``chdb://path`` for the embedded engine, ``http(s)://`` for a server."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlparse, urlunparse

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from aimeter.store.query_auth import READER_USER, password_file_for, read_password


def chdb_path(url: str) -> Path | None:
    """The data directory of a ``chdb://`` URL, or None for a server URL."""
    parsed = urlparse(url)
    if parsed.scheme != "chdb":
        return None
    return Path(parsed.netloc + parsed.path)


def get_client(url: str) -> Client:
    """One client for either engine; the embedded directory is created on first use."""
    path = chdb_path(url)
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        return clickhouse_connect.get_client(dsn=f"chdb://{path}")
    return clickhouse_connect.get_client(dsn=url)


def with_credentials(url: str, user: str | None, password: str | None) -> str:
    """``url`` with ``user``/``password`` (separate settings) as its percent-encoded userinfo, replacing any there.

    Separate settings exist because a password pasted into a URL breaks on ``@ : / # ? %``; encoded here, any
    password survives the round trip (clickhouse-connect percent-decodes the userinfo). Embedded ``chdb://`` URLs
    carry no credentials and are returned unchanged."""
    parsed = urlparse(url)
    if parsed.scheme not in {"http", "https"} or (user is None and password is None):
        return url
    user = user if user is not None else unquote(parsed.username or "default")
    password = password if password is not None else unquote(parsed.password or "")
    host = parsed.hostname or ""
    host = f"[{host}]" if ":" in host else host
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}" + (f":{parsed.port}" if parsed.port else "")
    return urlunparse(parsed._replace(netloc=netloc))


def redact(url: str) -> str:
    """``url`` fit for a log line: the password replaced by ``***`` and the query string dropped."""
    parsed = urlparse(url)
    if parsed.password is None:
        return url.partition("?")[0].partition("#")[0]
    netloc = parsed.netloc.rpartition("@")[2]
    user = parsed.username or ""
    return urlunparse(parsed._replace(netloc=f"{user}:***@{netloc}", query="", fragment=""))


def report_client(url: str, query_port: int) -> Client:
    """A client for reports. Embedded mode: the process that owns chDB (the pricer) answers on its
    read-only query endpoint; only when nobody serves it is the directory opened here."""
    if chdb_path(url) is None:
        return get_client(url)
    try:  # a cheap probe first, so a missing endpoint is not logged as a driver error
        with urllib.request.urlopen(f"http://127.0.0.1:{query_port}/ping", timeout=2):
            pass
    except (urllib.error.URLError, OSError):
        return get_client(url)  # nobody serves the store: open it here (fails clearly if it is locked)
    return query_endpoint_client(url, query_port)


def query_endpoint_client(url: str, query_port: int, **kwargs: Any) -> Client:
    """A client of the pricer's query endpoint, as its reader (password from the file beside the store)."""
    path = chdb_path(url)
    if path is None:
        raise ValueError(f"{url!r} is not an embedded store: there is no query endpoint to connect to")
    password = read_password(password_file_for(path))
    return clickhouse_connect.get_client(host="127.0.0.1", port=query_port, username=READER_USER, password=password,
                                         connect_timeout=2, **kwargs)

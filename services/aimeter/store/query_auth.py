"""Who may use the query endpoint: the reader's credential, and no browsers.

The endpoint serves the whole ledger, so every request carries the reader's password, given any
way ClickHouse's own HTTP interface takes one (basic auth, ``X-ClickHouse-User``/``-Key``
headers, ``user``/``password`` URL parameters). The password is generated on first start and
kept in a 0600 file beside the embedded store, where ``aimeter spend``/``chargeback``/
``reconcile`` on the same host read it.

Browsers are kept out twice over: a page the operator opens could POST ``text/plain`` without a
CORS preflight, and a DNS-rebinding page reaches 127.0.0.1 under its own host name. So a request
that carries ``Origin`` (or a cross-site ``Sec-Fetch-Site``) is refused, and so is one whose
``Host`` is not the address the endpoint is bound to.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

READER_USER = "aimeter_reader"
PASSWORD_FILE_NAME = "query_password"  # noqa: S105 - a file name, not a password
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
_CODE_NAMES = {194: "REQUIRED_PASSWORD", 516: "AUTHENTICATION_FAILED", 497: "ACCESS_DENIED"}


class AccessDeniedError(Exception):
    """Refused before any SQL is read; carries ClickHouse's error code for the answer."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code
        self.code_name = _CODE_NAMES.get(code, "ACCESS_DENIED")


def password_file_for(chdb_path: str | os.PathLike[str]) -> Path:
    """The reader's password file: beside the chDB directory (``<data dir>/query_password``)."""
    return Path(chdb_path).resolve().parent / PASSWORD_FILE_NAME


def ensure_password(path: Path) -> str:
    """Read the password, creating it (0600, 32 random bytes) on first start.

    A file that others may read is refused rather than used: the password would be theirs too.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_password(path)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(32) + "\n")
    return read_password(path)


def read_password(path: Path) -> str:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PermissionError(f"{path} is readable by other users (mode {stat.S_IMODE(mode):o}); run: chmod 600 {path}")
    password = path.read_text().strip()
    if not password:
        raise PermissionError(f"{path} is empty; delete it and restart the pricer to make a new password")
    return password


def allowed_hosts(bound_host: str, port: int) -> frozenset[str]:
    """``Host`` values that name this endpoint; loopback binds answer to every loopback name."""
    names = {bound_host if ":" not in bound_host else f"[{bound_host}]"}
    if bound_host in ("127.0.0.1", "localhost", "::1"):
        names.update(LOOPBACK_NAMES)
    return frozenset(f"{name}:{port}".lower() for name in names)


def check_browser(headers: Mapping[str, str], hosts: frozenset[str]) -> None:
    """Refuse browsers: any ``Origin``, a cross-site fetch, or a ``Host`` that is not ours."""
    if "Origin" in headers:
        raise AccessDeniedError("requests from web pages (with an Origin header) are refused", 497)
    if headers.get("Sec-Fetch-Site", "none") not in ("none", "same-origin"):
        raise AccessDeniedError("requests from web pages (Sec-Fetch-Site) are refused", 497)
    host = headers.get("Host", "").lower()
    if host not in hosts:
        expected = ", ".join(sorted(hosts))
        raise AccessDeniedError(f"Host {host[:100]!r} is not this endpoint (expected one of {expected})", 497)


def presented_credentials(headers: Mapping[str, str], params: Mapping[str, str]) -> tuple[str, str] | None:
    """User and password, taken the ways ClickHouse takes them; None when none was given."""
    if "X-ClickHouse-User" in headers or "X-ClickHouse-Key" in headers:
        return headers.get("X-ClickHouse-User", "default"), headers.get("X-ClickHouse-Key", "")
    authorization = headers.get("Authorization", "")
    if authorization[:6].lower() == "basic ":
        try:
            user, _, password = base64.b64decode(authorization[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return user, password
    if "user" in params or "password" in params:
        return params.get("user", "default"), params.get("password", "")
    return None


def check_credentials(presented: tuple[str, str] | None, password: str) -> None:
    """Constant-time check of the reader's user and password."""
    if presented is None:
        raise AccessDeniedError(f"{READER_USER}: authentication required: send the password in "
                                f"{PASSWORD_FILE_NAME} (beside the embedded store) as basic auth", 194)
    user, given = presented
    user_ok = hmac.compare_digest(user.encode(), READER_USER.encode())
    password_ok = hmac.compare_digest(given.encode(), password.encode())
    if not (user_ok and password_ok):
        raise AccessDeniedError(f"{user[:64]}: Authentication failed: password is incorrect, or there is no user "
                                f"with such name (the reader is {READER_USER})", 516)

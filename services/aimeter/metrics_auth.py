"""Who may scrape ``/metrics`` (the gateway's and the pricer's): a bearer token, and no browsers.

The metrics name teams and models and show traffic and spend by team, so they take a credential like
every other port that is not the gateway's API. It is its own token, not the query endpoint's reader
password, so a Prometheus server that scrapes the pricer cannot read the ledger. It is generated on first
start into a 0600 file (``<data dir>/metrics_token`` unless ``AIMETER_METRICS_TOKEN_FILE`` names one);
Prometheus reads the same file (``authorization: {credentials_file: ...}`` in a scrape config).
A request carrying ``Origin`` or a cross-site ``Sec-Fetch-Site`` is refused: a web page the operator
opens cannot read the metrics with the operator's ambient access.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from pathlib import Path

from aimeter.store.query_auth import ensure_password

TOKEN_FILE_NAME = "metrics_token"  # noqa: S105 - a file name, not a token


class MetricsDenied(Exception):  # noqa: N818 - an answer, not a fault
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def token_file(data_dir: Path, configured: Path | None) -> Path:
    return configured or data_dir / TOKEN_FILE_NAME


def ensure_token(path: Path) -> str:
    """Read the token, creating it (32 random bytes, mode 0600) on first start; a file others can read is refused."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return ensure_password(path)


def check_scrape(headers: Mapping[str, str], token: str) -> None:
    """``headers`` with lower-case names. Raises MetricsDenied (403 browser, 401 no or wrong token)."""
    if "origin" in headers or headers.get("sec-fetch-site", "none") not in ("none", "same-origin"):
        raise MetricsDenied(403, "metrics are not served to web pages (Origin / Sec-Fetch-Site)")
    authorization = headers.get("authorization", "")
    given = authorization[7:].strip() if authorization[:7].lower() == "bearer " else ""
    if not given or not hmac.compare_digest(given.encode(), token.encode()):
        raise MetricsDenied(401, f"metrics need 'Authorization: Bearer <token>', the token in the gateway's or "
                                 f"pricer's {TOKEN_FILE_NAME} file (AIMETER_METRICS_TOKEN_FILE)")

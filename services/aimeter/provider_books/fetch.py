"""HTTP adapter for the providers' admin APIs: follow ``next_page`` until ``has_more`` is false, back off on
429/5xx (``retry-after`` when given), and turn a wrong key into one clear sentence. The key is sent in a header
and never appears in an error, a log line or a URL."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from decimal import Decimal
from typing import Any

RETRYABLE = {429, 500, 502, 503, 504, 529}
# Anything shaped like a provider key, masked or not (OpenAI's 401 message echoes the key as "sk-ab***wxyz").
_KEYLIKE = re.compile(r"sk-[A-Za-z0-9_*.\-]+")
Sleep = Callable[[float], None]


class AdminApiError(RuntimeError):
    """The provider refused or failed; the message names the endpoint and status, never the key."""


def scrub(text: str, key: str) -> str:
    """``text`` with the key and anything key-shaped replaced: provider error messages may quote the key."""
    if key:
        text = text.replace(key, "[redacted]")
    return _KEYLIKE.sub("sk-[redacted]", text)


def _error_text(raw: bytes, key: str) -> str:
    try:
        body = json.loads(raw)
    except ValueError:
        return scrub(raw[:200].decode("utf-8", "replace"), key)
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        text = f"{error.get('type') or error.get('code') or 'error'}: {error.get('message') or ''}".strip()
        return scrub(text, key)
    return scrub(str(body)[:200], key)


def _hint(status: int, provider: str) -> str:
    if status == 401:
        admin = "an Admin key (sk-admin-...)" if provider == "openai" else "an Admin key (sk-ant-admin...)"
        return f"the admin key was refused: check --admin-key-file holds {admin}, not a project or inference key"
    if status == 403:
        return "the key is valid but may not read organization usage: it must be an organization Admin key"
    return "the request was rejected"


class AdminClient:
    """GETs JSON pages from one provider's admin API; ``sleep`` is injectable so tests do not wait."""

    def __init__(self, provider: str, base_url: str, headers: dict[str, str], key: str, *, attempts: int = 6,
                 timeout: float = 30.0, sleep: Sleep = time.sleep, max_pages: int = 10_000) -> None:
        if urllib.parse.urlsplit(base_url).scheme not in ("http", "https"):
            raise ValueError(f"admin API base URL must be http(s)://, got {base_url!r}")
        self.provider, self.base_url, self._headers, self._key = provider, base_url.rstrip("/"), dict(headers), key
        self.attempts, self.timeout, self.sleep, self.max_pages = attempts, timeout, sleep, max_pages
        self.requests = 0

    def pages(self, path: str, params: list[tuple[str, str]], next_page: Callable[[dict[str, Any]], str | None],
              ) -> list[dict[str, Any]]:
        """Every page of one report, in order."""
        out, cursor = [], None
        for _ in range(self.max_pages):
            body = self.get(path, params + ([("page", cursor)] if cursor else []))
            if not isinstance(body.get("data"), list) or "has_more" not in body:
                raise AdminApiError(f"{self.provider} {path}: answer without data/has_more, not a usage page")
            out.append(body)
            cursor = next_page(body)
            if cursor is None:
                return out
        raise AdminApiError(f"{self.provider} {path}: more than {self.max_pages} pages; narrow --since/--until")

    def get(self, path: str, params: list[tuple[str, str]]) -> dict[str, Any]:
        url = f"{self.base_url}{path}?{urllib.parse.urlencode(params)}"
        headers = {**self._headers, "Accept": "application/json", "User-Agent": "ai-meter-reconcile"}
        request = urllib.request.Request(url, headers=headers)  # noqa: S310 - http(s) only, checked in __init__
        delay = 1.0
        for attempt in range(1, self.attempts + 1):
            self.requests += 1
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - http(s) only
                    return json.loads(response.read(), parse_float=Decimal)
            except urllib.error.HTTPError as exc:
                raw = exc.read()
                if exc.code in RETRYABLE and attempt < self.attempts:
                    self.sleep(_retry_after(exc.headers.get("retry-after"), delay))
                    delay = min(delay * 2, 60.0)
                    continue
                raise AdminApiError(f"{self.provider} {path}: HTTP {exc.code} ({_error_text(raw, self._key)}); "
                                    f"{_hint(exc.code, self.provider)}") from None
            except urllib.error.URLError as exc:
                raise AdminApiError(f"{self.provider} {path}: cannot reach {self.base_url}: "
                                    f"{scrub(str(exc.reason), self._key)}") from None
        raise AdminApiError(f"{self.provider} {path}: gave up after {self.attempts} attempts")


def _retry_after(header: str | None, fallback: float) -> float:
    try:
        return min(max(float(header), 0.0), 120.0) if header else fallback
    except ValueError:
        return fallback

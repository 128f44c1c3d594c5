"""Posting an alert to the webhook until it answers 2xx.

A failure (no answer, a timeout, any other status) is retried with exponential backoff, for as long as it
takes: an alert is recorded as fired only after a 2xx, so it is never lost and, once recorded, never posted
again. Each payload carries ``alert_id``, the same for every retry and after a restart, so a receiver can
drop the one duplicate the design allows (a crash between the 2xx and the record; see the README's Alerts).
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

import aiohttp

from aimeter.alerts.rules import Alert

log = logging.getLogger("aimeter.alerts")


def where(url: str) -> str:
    """The URL fit for a log line: scheme and host only. A Slack webhook's path is its secret."""
    parsed = urlsplit(url)
    return f"{parsed.scheme}://{parsed.hostname}{f':{parsed.port}' if parsed.port else ''}/…"


class Webhook:
    """One webhook URL, one connection pool; :meth:`post` returns once the receiver took the alert."""

    def __init__(self, url: str, timeout_s: float = 10.0, backoff_s: float = 1.0, backoff_max_s: float = 60.0) -> None:
        self.url = url
        self.where = where(url)
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.session: aiohttp.ClientSession | None = None
        self.posts = 0  # attempts, failed ones included

    async def post(self, alert: Alert) -> None:
        delay = self.backoff_s
        while True:
            problem = await self._attempt(alert)
            if problem is None:
                return
            log.warning("alert %s: webhook %s %s; retrying in %.0f s (it is recorded as fired only after a 2xx)",
                        alert.key, self.where, problem, delay)
            await asyncio.sleep(delay)
            delay = min(self.backoff_max_s, delay * 2)

    async def _attempt(self, alert: Alert) -> str | None:
        if self.session is None:
            self.session = aiohttp.ClientSession(timeout=self.timeout)
        self.posts += 1
        try:
            async with self.session.post(self.url, json=alert.payload()) as response:
                await response.read()
                return None if 200 <= response.status < 300 else f"answered {response.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            return f"failed ({exc.__class__.__name__}: {exc})"

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

"""The ledger's side of the comparison: SQL over ``usage_events`` and ``usage_costs`` (both FINAL, so exact under
redelivery), grouped by bucket x backend x model x upstream project. A row's scope (OpenAI project, Anthropic
workspace) is the event's own ``upstream_project`` (recorded by the gateway since migration 0009, from the
backend's ``account``); for older rows ``scopes`` maps the backend to what the config declares now. Pure: SQL
text and row mapping, no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from aimeter.config import GatewayConfig
from aimeter.provider_books.books import ALL, Book, Figures, Key

_BUCKET_FN = {"1h": "toStartOfHour", "1d": "toStartOfDay"}

_FILTER = """provider = {provider:String} AND deployment = 'proprietary'
  AND started_at >= {since:DateTime64(3, 'UTC')} AND started_at < {until:DateTime64(3, 'UTC')}
  AND (length({backends:Array(String)}) = 0 OR has({backends:Array(String)}, backend))"""

USAGE_SQL = """
SELECT {fn}(started_at, 'UTC') AS bucket, backend, if(model_served != '', model_served, model_requested) AS model,
       upstream_project, sum(input_tokens), sum(cache_read_input_tokens), sum(cache_creation_input_tokens),
       sum(output_tokens),
       countIf(status NOT IN ('upstream_error', 'gateway_error')) AS requests,
       countIf(http_status BETWEEN 200 AND 299 AND usage_source != 'reported') AS unread
FROM usage_events FINAL
WHERE {filter}
GROUP BY bucket, backend, model, upstream_project
"""

COST_SQL = """
SELECT {fn}(started_at, 'UTC') AS bucket, backend, model, e.upstream_project, sum(cost_usd),
       countIf(cost_usd IS NULL) AS unpriced
FROM usage_costs FINAL
LEFT JOIN (SELECT event_id, upstream_project FROM usage_events FINAL WHERE {filter}) AS e USING event_id
WHERE {filter}
GROUP BY bucket, backend, model, e.upstream_project
"""


def queries(width: str) -> tuple[str, str]:
    fn = _BUCKET_FN[width]
    return USAGE_SQL.format(fn=fn, filter=_FILTER), COST_SQL.format(fn=fn, filter=_FILTER)


def parameters(provider: str, since: datetime, until: datetime, backends: Sequence[str]) -> dict[str, Any]:
    return {"provider": provider, "since": since, "until": until, "backends": list(backends)}


def scopes(config: GatewayConfig | None, provider: str) -> dict[str, str]:
    """Backend -> project (OpenAI) or workspace (Anthropic) id, for the backends of ``provider`` that declare one."""
    if config is None:
        return {}
    out = {}
    for name, backend in config.backends.items():
        account = backend.account
        if backend.provider != provider or account is None:
            continue
        scope = account.project_id if provider == "openai" else account.workspace_id
        if scope:
            out[name] = scope
    return out


def is_scoped(scope_of: Mapping[str, str], usage: Iterable[Sequence[Any]]) -> bool:
    """Group by project/workspace when the config declares one or the ledger's events recorded one."""
    return bool(scope_of) or any(row[3] for row in usage)


def ledger_book(usage: Iterable[Sequence[Any]], costs: Iterable[Sequence[Any]], scope_of: Mapping[str, str],
                scoped: bool) -> Book:
    """Rows of both queries as one book keyed like the provider's (no recorded or declared scope is '')."""
    book = Book()

    def key(bucket: datetime, backend: str, model: str, project: str) -> Key:
        bucket = bucket.replace(tzinfo=UTC) if bucket.tzinfo is None else bucket.astimezone(UTC)
        return Key(bucket, model, (project or scope_of.get(backend, "")) if scoped else ALL)

    for bucket, backend, model, project, inp, read, write, out, requests, unread in usage:
        book.add(key(bucket, backend, model, project), Figures(int(inp), int(read), int(write), int(out),
                                                               int(requests), None, int(unread)))
    for bucket, backend, model, project, usd, unpriced in costs:
        book.add(key(bucket, backend, model, project), Figures(usd=Decimal(usd) if usd is not None else Decimal(0),
                                                               unpriced_requests=int(unpriced)))
    return book

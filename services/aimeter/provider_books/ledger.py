"""The ledger's side of the comparison: SQL over ``usage_events`` and ``usage_costs`` (both FINAL, so exact under
redelivery), grouped by bucket x backend x model; ``scopes`` maps each backend to the provider project or
workspace its credential belongs to (the ``account`` block of the backend in the gateway config), so the ledger
groups the way the provider does without a new column. Pure: SQL text and row mapping, no I/O."""

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
       sum(input_tokens), sum(cache_read_input_tokens), sum(cache_creation_input_tokens), sum(output_tokens),
       countIf(status NOT IN ('upstream_error', 'gateway_error')) AS requests,
       countIf(http_status BETWEEN 200 AND 299 AND usage_source != 'reported') AS unread
FROM usage_events FINAL
WHERE {filter}
GROUP BY bucket, backend, model
"""

COST_SQL = """
SELECT {fn}(started_at, 'UTC') AS bucket, backend, model, sum(cost_usd), countIf(cost_usd IS NULL) AS unpriced
FROM usage_costs FINAL
WHERE {filter}
GROUP BY bucket, backend, model
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


def ledger_book(usage: Iterable[Sequence[Any]], costs: Iterable[Sequence[Any]], scope_of: Mapping[str, str],
                scoped: bool) -> Book:
    """Rows of both queries as one book keyed like the provider's (a backend with no declared scope is '')."""
    book = Book()

    def key(bucket: datetime, backend: str, model: str) -> Key:
        bucket = bucket.replace(tzinfo=UTC) if bucket.tzinfo is None else bucket.astimezone(UTC)
        return Key(bucket, model, scope_of.get(backend, "") if scoped else ALL)

    for bucket, backend, model, inp, read, write, out, requests, unread in usage:
        book.add(key(bucket, backend, model), Figures(int(inp), int(read), int(write), int(out), int(requests),
                                                      None, int(unread)))
    for bucket, backend, model, usd, unpriced in costs:
        book.add(key(bucket, backend, model), Figures(usd=Decimal(usd) if usd is not None else Decimal(0),
                                                      unpriced_requests=int(unpriced)))
    return book

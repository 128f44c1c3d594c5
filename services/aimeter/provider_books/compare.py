"""Pure: the provider's books against the ledger, row by row, with a drift class and a reason for each row.

Two kinds of rows:

* ``usage``: bucket x model x scope (OpenAI project / Anthropic workspace, or ``*`` when none is declared):
  tokens by class and requests (OpenAI counts requests; Anthropic's usage report does not).
* ``cost``: day x model x scope with USD next to the tokens of that day, so a price difference can be told
  from a token difference. OpenAI's cost report has no model split (its ``line_item`` is a billing label):
  its cost rows are day x scope with model ``*``.

Classes, in the order they are decided:

* ``match``: every figure within tolerance.
* ``price_table``: tokens and requests agree, USD does not: the ledger's price (list price or an override)
  differs from the rate the provider billed.
* ``unread_usage``: the provider billed more tokens and the ledger holds answered requests whose usage the
  gateway could not read (``usage_source`` none or estimated), or the same number of requests with fewer tokens.
* ``bypass``: the provider counted more requests or tokens than the gateway saw: traffic reached the account
  without going through the gateway.
* ``bucket_edge``: two neighbouring buckets drift in opposite directions and cancel out: requests near a bucket
  edge were placed on different sides by the two clocks (the ledger buckets by request start).
* ``non_token_charges``: a provider charge with no model (web search, code execution): not metered by tokens.
* ``ledger_over``: the ledger holds more than the provider reports (provider data lags by minutes; a request
  the provider did not bill was counted).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from decimal import Decimal

from aimeter.provider_books.books import ALL, BUCKETS, NON_TOKEN, TOKEN_FIELDS, Book, Figures, Key, day_of

CLASSES = ("match", "price_table", "unread_usage", "bypass", "bucket_edge", "non_token_charges", "ledger_over")
_LABEL = {"input_tokens": "input", "cache_read_tokens": "cache read", "cache_write_tokens": "cache write",
          "output_tokens": "output", "requests": "requests"}


@dataclass(frozen=True)
class Tolerance:
    """A figure agrees when |provider - ledger| <= the absolute allowance or <= ``pct`` percent of the provider's."""

    pct: Decimal = Decimal(1)
    tokens: int = 0
    usd: Decimal = Decimal("0.01")

    def within(self, provider: int | Decimal | None, ledger: int | Decimal | None, allowance: int | Decimal) -> bool:
        if provider is None:
            return True  # the provider does not report this figure: nothing to compare
        drift = abs(Decimal(provider) - Decimal(ledger or 0))
        return drift <= allowance or (provider != 0 and Decimal(drift) * 100 <= self.pct * abs(Decimal(provider)))


@dataclass(frozen=True)
class Drift:
    kind: str  # usage | cost
    width: str  # 1h | 1d
    key: Key
    provider: Figures
    ledger: Figures
    classification: str
    explanation: str
    beyond: bool  # beyond tolerance and not explained by a bucket edge: counts for the exit status

    @property
    def token_drift(self) -> int:
        return self.provider.tokens - self.ledger.tokens

    @property
    def usd_drift(self) -> Decimal | None:
        if self.provider.usd is None:
            return None
        return self.provider.usd - (self.ledger.usd or Decimal(0))


def pct(provider: int | Decimal | None, ledger: int | Decimal | None) -> Decimal | None:
    """Drift as a percentage of the provider's figure (the bill); None when the provider's is 0 or absent."""
    if not provider:
        return None
    return (Decimal(provider) - Decimal(ledger or 0)) * 100 / Decimal(provider)


def _token_gaps(p: Figures, led: Figures, tol: Tolerance) -> list[str]:
    gaps = [f for f in TOKEN_FIELDS if not tol.within(getattr(p, f), getattr(led, f), tol.tokens)]
    if not tol.within(p.requests, led.requests, 0):
        gaps.append("requests")
    return gaps


def _detail(p: Figures, led: Figures, fields: Iterable[str]) -> str:
    parts = []
    for f in fields:
        a, b = getattr(p, f), getattr(led, f) or 0
        parts.append(f"{_LABEL[f]} {a - b:+d} (provider {a}, ledger {b})")
    return "; ".join(parts)


def classify(kind: str, key: Key, p: Figures, led: Figures, tol: Tolerance) -> tuple[str, str]:
    """The class of one row and a sentence saying why, from its figures alone (bucket edges come later)."""
    gaps = _token_gaps(p, led, tol)
    usd_ok = kind != "cost" or tol.within(p.usd, led.usd, tol.usd)
    if key.model == NON_TOKEN and not usd_ok:
        return "non_token_charges", (f"${p.usd} billed for web search, code execution or sessions: charged per use, "
                                     "not by tokens, so the gateway does not meter it")
    if not gaps and usd_ok:
        return "match", "within tolerance"
    if not gaps:
        unpriced = f"; {led.unpriced_requests} ledger requests have no price" if led.unpriced_requests else ""
        return "price_table", (f"same tokens, provider billed ${p.usd} and the ledger priced ${led.usd or 0}"
                               f"{unpriced}: the price table (list price or override) differs from the billed rate")
    detail = _detail(p, led, gaps)
    if p.tokens >= led.tokens and led.unread_requests:
        return "unread_usage", (f"{led.unread_requests} answered requests had no readable usage in the gateway "
                                f"(e.g. a stream cut before its usage chunk); the provider billed them: {detail}")
    if p.tokens > led.tokens and p.requests is not None and p.requests == (led.requests or 0):
        return "unread_usage", f"same request count, fewer tokens in the ledger: the gateway read less usage: {detail}"
    if p.tokens > led.tokens or (p.requests or 0) > (led.requests or 0):
        return "bypass", f"the provider counted traffic the gateway never saw (a key used directly?): {detail}"
    return "ledger_over", (f"the ledger holds more than the provider reports (provider data can lag by minutes; a "
                           f"request it did not bill may have been counted): {detail}")


def _edge_pairs(rows: list[Drift], tol: Tolerance) -> list[Drift]:
    """Neighbouring buckets of one model and scope whose drifts cancel become ``bucket_edge`` rows."""
    out = list(rows)
    index = {(r.kind, r.key): i for i, r in enumerate(out)}
    for i, row in enumerate(out):
        nxt_key = replace(row.key, bucket_start=row.key.bucket_start + BUCKETS[row.width])
        j = index.get((row.kind, nxt_key))
        if j is None or row.classification == "match" or out[j].classification == "match":
            continue
        nxt = out[j]
        if row.token_drift * nxt.token_drift >= 0 and (row.usd_drift or 0) * (nxt.usd_drift or 0) >= 0:
            continue
        p, led = row.provider + nxt.provider, row.ledger + nxt.ledger
        if _token_gaps(p, led, tol) or (row.kind == "cost" and not tol.within(p.usd, led.usd, tol.usd)):
            continue
        moved = abs(row.token_drift)
        text = (f"{moved} tokens fall on the other side of the {nxt.key.bucket_start:%Y-%m-%d %H:%M} edge in the "
                "provider's books; the two buckets agree together (the ledger buckets by request start)")
        out[i] = replace(row, classification="bucket_edge", explanation=text, beyond=False)
        out[j] = replace(nxt, classification="bucket_edge", explanation=text, beyond=False)
    return out


def _rows(kind: str, width: str, provider: dict[Key, Figures], ledger: dict[Key, Figures],
          tol: Tolerance) -> list[Drift]:
    rows = []
    for key in sorted(provider.keys() | ledger.keys(), key=lambda k: (k.bucket_start, k.scope, k.model)):
        p, led = provider.get(key, Figures()), ledger.get(key, Figures())
        cls, text = classify(kind, key, p, led, tol)
        rows.append(Drift(kind, width, key, p, led, cls, text, cls != "match"))
    return _edge_pairs(rows, tol)


def _roll_up(book: dict[Key, Figures], model_split: bool) -> dict[Key, Figures]:
    out: Book = Book()
    for key, figures in book.items():
        out.add(day_of(key, model=None if model_split else ALL), figures)
    return out.rows


def reconcile(usage: Book, costs: Book, ledger: Book, width: str, *, cost_by_model: bool,
              tol: Tolerance) -> list[Drift]:
    """Every row of both books, compared: usage rows at ``width``, then daily cost rows."""
    # The ledger's request count is shown either way; it is compared only where the provider reports one.
    led_usage = {k: replace(v.without_usd(), unpriced_requests=0) for k, v in ledger.rows.items()}
    usage_rows = _rows("usage", width, usage.rows, led_usage, tol)
    cost_provider = _roll_up({k: v.without_usd() for k, v in usage.rows.items()}, cost_by_model)
    for key, figures in costs.rows.items():
        cost_provider[key] = cost_provider.get(key, Figures()) + figures
    for key, figures in cost_provider.items():
        if figures.usd is None:
            cost_provider[key] = replace(figures, usd=Decimal(0))  # tokens without a charge are billed $0
    cost_ledger = _roll_up(ledger.rows, cost_by_model)
    return usage_rows + _rows("cost", "1d", cost_provider, cost_ledger, tol)


def exit_status(rows: list[Drift]) -> int:
    return 1 if any(r.beyond for r in rows) else 0

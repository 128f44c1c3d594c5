"""List prices from genai-prices (the pinned package's bundled snapshot), read as rate cards. Pure.

genai-prices is used as a price *table*: we look up the model and the prices in force at the
event's own time, then do the per-class arithmetic ourselves (:mod:`aimeter.pricer.rates`) so
that every component of a row can be shown and defended, not only the total.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from importlib.metadata import version

from genai_prices import data_snapshot
from genai_prices.types import ModelPrice, TieredPrices

from aimeter.pricer.rates import PER_THOUSAND, Rate, RateCard

GENAI_PRICES_VERSION = f"genai-prices=={version('genai-prices')}"
# genai-prices price keys that our usage can give a non-zero count, mapped to our rate keys.
# Keys for things the gateway does not meter (web searches, audio seconds, pages…) are ignored:
# their count is always zero here.
PRICE_KEYS = {
    "input_mtok": "input",
    "input_text_mtok": "input",
    "cache_read_mtok": "cache_read",
    "cache_write_mtok": "cache_write",
    "cache_write_5m_mtok": "cache_write_5m",
    "cache_write_1h_mtok": "cache_write_1h",
    "input_audio_mtok": "input_audio",
    "input_image_mtok": "input_image",
    "output_mtok": "output",
    "output_text_mtok": "output",
    "output_reasoning_mtok": "reasoning",
    "output_audio_mtok": "output_audio",
    "output_image_mtok": "output_image",
}
BATCH_CONTEXT = {"processing": "batch"}


@dataclass(frozen=True, slots=True)
class ListPrice:
    """The rate card genai-prices gives a model at one moment, and which model id matched."""

    card: RateCard
    provider_id: str
    model_id: str
    batch: bool


def to_rate(value: Decimal | TieredPrices) -> Rate:
    if isinstance(value, TieredPrices):
        return Rate(value.base, tuple((t.start, t.price) for t in value.tiers))
    return Rate(value)


def to_card(prices: ModelPrice) -> RateCard:
    """Specific keys (``input_text_mtok``) win over generic ones (``input_mtok``) for the same class."""
    rates: dict[str, Rate] = {}
    for key, ours in PRICE_KEYS.items():
        value = getattr(prices, key, None)
        if value is not None and (ours not in rates or "_text_" in key):
            rates[ours] = to_rate(value)
    per_request = getattr(prices, "requests_kcount", None)
    return RateCard(rates, (per_request / PER_THOUSAND) if isinstance(per_request, Decimal) else Decimal(0))


def list_price(provider: str, model: str, at: datetime, *, batch: bool = False) -> ListPrice | None:
    """The list price of ``provider/model`` in force at ``at``; None when genai-prices does not know it.

    With ``batch``, genai-prices' batch price is used where it has one (``batch`` in the
    result says whether it did).
    """
    if not model:
        return None
    try:
        found_provider, info = data_snapshot.get_snapshot().find_provider_model(model, None, provider, None)
    except LookupError:
        return None
    standard = info.get_prices(at)
    if batch:
        discounted = info.get_prices(at, BATCH_CONTEXT)
        if discounted != standard:
            return ListPrice(to_card(discounted), found_provider.id, info.id, batch=True)
    return ListPrice(to_card(standard), found_provider.id, info.id, batch=False)

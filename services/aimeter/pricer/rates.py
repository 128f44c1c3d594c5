"""Per-class rates and cost components: the arithmetic every priced row is made of. Pure.

A request's tokens are split once into disjoint *classes* (a token is counted in exactly one),
each class is priced at its own rate (or, where the price table has none, at the rate of the
class it belongs to: a cache read falls back to input, reasoning to output), and every class
cost is rounded once to 12 decimal places, half-even. The total is the sum of the rounded
classes, so the components always add up to it exactly, in Python and in ClickHouse.

Long-context tiers follow the providers' (and genai-prices') "cliff" rule: when the request's
whole prompt (``input_tokens``, cache included) exceeds a tier's threshold, that tier's rate
applies to every token of the class, not only to the tokens above it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Protocol

# ClickHouse stores Decimal(38, 12); rounding here, once, keeps Python and SQL totals identical.
QUANTUM = Decimal("0.000000000001")
PER_MILLION = Decimal(1_000_000)
PER_THOUSAND = Decimal(1000)

INPUT_CLASSES = ("input_text", "cache_read", "cache_write_5m", "cache_write_1h", "input_audio", "input_image")
OUTPUT_CLASSES = ("output_text", "reasoning", "output_audio", "output_image")
# ``other``: per-request fees, and GPU time that no token can carry (a self-hosted call with no tokens).
TOKEN_CLASSES = (*INPUT_CLASSES, *OUTPUT_CLASSES)
CLASSES = (*TOKEN_CLASSES, "other")
# Where each group sits in a row of CLASSES components (the fast path sums these slices, never literal indexes).
INPUT_PART = slice(0, len(INPUT_CLASSES))
OUTPUT_PART = slice(len(INPUT_CLASSES), len(TOKEN_CLASSES))
if [list(CLASSES[INPUT_PART]), list(CLASSES[OUTPUT_PART]), list(CLASSES[OUTPUT_PART.stop:])] != [
        list(INPUT_CLASSES), list(OUTPUT_CLASSES), ["other"]]:
    raise RuntimeError("CLASSES must be INPUT_CLASSES, then OUTPUT_CLASSES, then 'other'")

# Rate keys (USD per 1M tokens) and, per class, the keys tried in order: a class with no rate of
# its own is charged like the class it is part of (a 1h cache write with no 1h price is a cache write).
RATE_KEYS = ("input", "cache_read", "cache_write", "cache_write_5m", "cache_write_1h", "input_audio", "input_image",
             "output", "reasoning", "output_audio", "output_image")
FALLBACKS: Mapping[str, tuple[str, ...]] = {
    "input_text": ("input",),
    "cache_read": ("cache_read", "input"),
    "cache_write_5m": ("cache_write_5m", "cache_write", "input"),
    "cache_write_1h": ("cache_write_1h", "cache_write", "input"),
    "input_audio": ("input_audio", "input"),
    "input_image": ("input_image", "input"),
    "output_text": ("output",),
    "reasoning": ("reasoning", "output"),
    "output_audio": ("output_audio", "output"),
    "output_image": ("output_image", "output"),
}


def money(value: Decimal) -> Decimal:
    return value.quantize(QUANTUM, rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True, slots=True)
class Rate:
    """USD per 1M tokens, with optional long-context tiers ``(threshold, rate)`` in ascending order."""

    base: Decimal
    tiers: tuple[tuple[int, Decimal], ...] = ()

    def at(self, prompt_tokens: int) -> tuple[Decimal, int | None]:
        """The rate for a request with this many prompt tokens, and the tier threshold applied (None: base)."""
        for threshold, rate in reversed(self.tiers):
            if prompt_tokens > threshold:
                return rate, threshold
        return self.base, None

    def scaled(self, factor: Decimal) -> Rate:
        return Rate(self.base * factor, tuple((t, r * factor) for t, r in self.tiers))


@dataclass(frozen=True, slots=True)
class RateCard:
    """A model's prices as this service reads them: per-class rates plus a fee per request."""

    rates: Mapping[str, Rate]
    per_request: Decimal = Decimal(0)

    def scaled(self, factor: Decimal) -> RateCard:
        """Every rate times ``factor`` (a discount applies to rates, so components still sum exactly)."""
        return RateCard({k: r.scaled(factor) for k, r in self.rates.items()}, self.per_request * factor)

    def rate_for(self, token_class: str) -> Rate | None:
        return next((self.rates[k] for k in FALLBACKS[token_class] if k in self.rates), None)


@dataclass(frozen=True, slots=True)
class Components:
    """Cost per class in USD, each rounded to 12 places; ``total`` is their exact sum."""

    by_class: Mapping[str, Decimal] = field(default_factory=dict)

    def __getitem__(self, token_class: str) -> Decimal:
        return self.by_class.get(token_class, Decimal(0))

    @property
    def total(self) -> Decimal:
        return sum((self[c] for c in CLASSES), Decimal(0))

    @property
    def input(self) -> Decimal:
        return sum((self[c] for c in INPUT_CLASSES), Decimal(0))

    @property
    def output(self) -> Decimal:
        return sum((self[c] for c in OUTPUT_CLASSES), Decimal(0))

    def as_row(self) -> list[Decimal]:
        """Values in :data:`CLASSES` order (the column order of ``usage_costs``)."""
        return [self[c] for c in CLASSES]


class UsageCounts(Protocol):
    """What pricing reads from a usage: a :class:`TokenUsage`, or its twin decoded by the pricer's fast path."""

    @property
    def input_tokens(self) -> int: ...
    @property
    def cache_read_input_tokens(self) -> int: ...
    @property
    def cache_creation_input_tokens(self) -> int: ...
    @property
    def cache_creation_1h_input_tokens(self) -> int: ...
    @property
    def input_audio_tokens(self) -> int: ...
    @property
    def input_image_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def reasoning_output_tokens(self) -> int: ...
    @property
    def output_audio_tokens(self) -> int: ...
    @property
    def output_image_tokens(self) -> int: ...


def class_count_tuple(usage: UsageCounts) -> tuple[int, ...]:
    """Split the normalized usage into disjoint classes that add up to input + output tokens.

    Counts are in :data:`TOKEN_CLASSES` order (a tuple: the pricer computes this for every event).
    Cache reads and writes are subsets of the prompt (OTel semantics). Writes without a reported
    TTL count as 5-minute writes, the default TTL where providers have one. Audio and image
    prompt tokens are taken from the uncached part first; any excess must have been cached and
    stays priced as the cache class (the usage carries no finer split).
    """
    read, writes, writes_1h = (usage.cache_read_input_tokens, usage.cache_creation_input_tokens,
                               usage.cache_creation_1h_input_tokens)
    uncached = usage.input_tokens - read - writes
    audio_in = min(usage.input_audio_tokens, uncached)
    image_in = min(usage.input_image_tokens, uncached - audio_in)
    reasoning, audio_out, image_out = (usage.reasoning_output_tokens, usage.output_audio_tokens,
                                       usage.output_image_tokens)
    return (uncached - audio_in - image_in, read, writes - writes_1h, writes_1h, audio_in, image_in,
            usage.output_tokens - reasoning - audio_out - image_out, reasoning, audio_out, image_out)


def class_counts(usage: UsageCounts) -> dict[str, int]:
    """:func:`class_count_tuple` by class name."""
    return dict(zip(TOKEN_CLASSES, class_count_tuple(usage), strict=True))


@dataclass(frozen=True, slots=True)
class Costed:
    """Components, the long-context tier threshold that applied (if any), and classes with no rate."""

    components: Components
    tier: int | None
    missing: tuple[str, ...]


def apply_card(usage: UsageCounts, card: RateCard) -> Costed:
    """Price each class at its rate; a class with tokens but no rate anywhere is reported as missing."""
    costs: dict[str, Decimal] = {}
    missing: list[str] = []
    tier: int | None = None
    for token_class, count in class_counts(usage).items():
        if count == 0:
            continue
        rate = card.rate_for(token_class)
        if rate is None:
            missing.append(token_class)
            continue
        per_million, applied = rate.at(usage.input_tokens)
        tier = applied if applied is not None else tier
        costs[token_class] = money(count * per_million / PER_MILLION)
    if card.per_request:
        costs["other"] = money(card.per_request)
    return Costed(Components(costs), tier, tuple(missing))


def split_exact(total: Decimal, weights: Mapping[str, int]) -> dict[str, Decimal]:
    """Split a rounded ``total`` across ``weights`` so the parts add up to it exactly.

    Largest remainder at 12 places: each part is first rounded down, and the few leftover
    quanta go to the parts that lost the most. Used where one measured cost (GPU-seconds)
    must be shown per class.
    """
    positive = {k: w for k, w in weights.items() if w > 0}
    weight = sum(positive.values())
    if weight == 0:
        return {"other": total} if total else {}
    units = int(total / QUANTUM)
    shares = {k: units * w for k, w in positive.items()}
    parts = {k: s // weight for k, s in shares.items()}
    leftover = units - sum(parts.values())
    by_remainder: Iterable[str] = sorted(positive, key=lambda k: (-(shares[k] % weight), k))
    for k in list(by_remainder)[:leftover]:
        parts[k] += 1
    return {k: Decimal(p) * QUANTUM for k, p in parts.items()}

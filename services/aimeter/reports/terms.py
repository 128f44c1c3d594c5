"""SQL terms every report spells the same way (pure): typed zeros and NULLs, and what "no cost" means.

Money stays Decimal: zeros and NULLs are typed ``Decimal(38, 12)`` so no sum is ever widened to Float. The
statuses of a request with no cost (no price known, or usage that could not be read) are counted wherever
requests are counted, never folded into a total as $0.
"""

ZERO = "toDecimal128(0, 12)"
NO_COST = "CAST(NULL AS Nullable(Decimal(38, 12)))"
NOT_PRICED = "('unpriced', 'unmetered')"

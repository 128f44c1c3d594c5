"""What every usage reader must give back, whatever it was fed: the invariants the fuzz tests assert."""

from __future__ import annotations

import math

from aimeter.events import TokenUsage, UsageSource
from aimeter.gateway.usage import Extracted


def check_extracted(extracted: Extracted) -> Extracted:
    """A result the event can carry as it is: a usage the contract accepts again (non-negative counts,
    subsets that fit), a known source, text fields, and a compute time that is a real duration or None."""
    assert isinstance(extracted, Extracted)
    assert TokenUsage.model_validate(extracted.usage.model_dump()) == extracted.usage
    assert extracted.source in set(UsageSource)
    assert isinstance(extracted.model_served, str)
    assert isinstance(extracted.problem, str)
    assert isinstance(extracted.error_type, str)
    seconds = extracted.compute_seconds
    assert seconds is None or (math.isfinite(seconds) and seconds >= 0)
    return extracted

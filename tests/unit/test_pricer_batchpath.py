"""The pricer's per-batch shortcuts give exactly what the per-message path gives: one decoder call for the whole
batch (a poison message anywhere falls back to per-message decoding), a tariff's cached outcome for plain bands,
and all-zero amount columns."""

import re
from array import array
from datetime import UTC

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from aimeter.pricer import fastparse, native
from aimeter.pricer.rows import build_batch
from aimeter.pricer.tariff import Tariffs, charge_of, reference_decides
from aimeter.pricer.write import _sums
from tests.unit.test_pricer_fastpath import BOOKS, PRICED_AT, ROUTES, events, messages, sample


def per_message(values: list[bytes]) -> list[object]:
    return [fastparse.decode(v) for v in values]


def batch_state(batch) -> tuple:
    """Everything a batch hands the writer, in order (row order matters: it makes the dedup token)."""
    return batch.poison, batch.events, batch.charges, batch.routes, batch.route_of


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages(), max_size=20))
def test_decode_all_is_decode_per_message(raws):
    assert fastparse.decode_all(raws) == per_message(raws)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages(), max_size=25), st.sampled_from(BOOKS))
def test_batches_are_what_the_per_message_decoder_made(raws, book):
    fast = build_batch(raws, book, PRICED_AT)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fastparse, "decode_all", per_message)
        reference = build_batch(raws, book, PRICED_AT)
    assert batch_state(fast) == batch_state(reference)


@pytest.mark.parametrize("position", [0, 7, 19])
def test_a_poison_message_anywhere_is_isolated_and_the_rest_is_decoded_alike(position):
    good = [sample(i).model_dump_json().encode() for i in range(20)]
    poison = b'{"schema_version":"1","event_id":"not-a-uuid"'
    mixed = [*good[:position], poison, *good[position:]]
    batch = build_batch(mixed, BOOKS[0], PRICED_AT)
    clean = build_batch(good, BOOKS[0], PRICED_AT)
    assert [raw for raw, _ in batch.poison] == [poison]
    assert batch.poison[0][1].startswith("invalid UsageEvent v1")
    assert batch_state(batch)[1:] == batch_state(clean)[1:]
    assert fastparse.decode_all(mixed) == per_message(mixed)


BLIND = sample(1, usage_source="none", usage={"input_tokens": 0, "output_tokens": 0})  # a 2xx, usage unread


@settings(max_examples=200, deadline=None)
@given(events(), st.sampled_from(BOOKS))
@example(BLIND, BOOKS[0])  # Hypothesis found it: the tariff would charge it $0, the reference says unmetered
def test_a_tariff_charges_alike_before_and_after_it_caches_its_outcome(event, book):
    """The first charge of a band takes the general path and caches the band's outcome; later ones use it."""
    raw = event.model_dump_json().encode()
    batch = build_batch([raw], book, PRICED_AT)
    if batch.poison or not batch.routes or reference_decides(event):  # build_batch never asks a tariff for it
        return
    tariff = Tariffs(book).get(batch.routes[0])  # a fresh memo: nothing cached yet
    try:
        first = tariff.charge(event.usage, event.backend_compute_seconds)
    except Exception:  # noqa: BLE001 - deferred to the reference path: nothing cached, nothing to compare
        return
    second = tariff.charge(event.usage, event.backend_compute_seconds)
    assert first == second == charge_of(book.price(event))


def test_a_2xx_answer_without_usage_is_unmetered_on_the_batch_path_whatever_its_route_has_cached():
    """A tariff charges tokens only: zero tokens would be $0. The batch path must hand a usage_source=none 2xx
    answer to the reference path even when its route's tariff is already built and cached (found by Hypothesis
    above: an all-zero gpt-4o-mini event the tariff would have charged 0)."""
    book = BOOKS[0]
    metered = sample(1)
    blind = sample(1 + len(ROUTES), usage_source="none", usage={"input_tokens": 0, "output_tokens": 0})
    batch = build_batch([e.model_dump_json().encode() for e in (metered, blind)], book, PRICED_AT)
    assert batch.charges[1] == charge_of(book.price(blind))
    assert batch.charges[1][0][0] is None
    assert batch.charges[1][2].status == "unmetered"


@pytest.mark.parametrize("wire", ["Decimal(18, 12)", "Decimal(38, 12)"])
def test_zero_amount_columns_encode_as_the_general_path(wire):
    width = 8 if wire.startswith("Decimal(18") else 16
    assert native.decimals([0] * 5, wire) == b"".join(v.to_bytes(width, "little", signed=True) for v in [0] * 5)
    assert native.decimals([0, 3, 0], wire) == b"".join(v.to_bytes(width, "little", signed=True) for v in [0, 3, 0])
    assert native.decimals([0] * 4, "Decimal(18, 12)") == array("q", [0] * 4).tobytes()


def test_sums_skip_zero_columns_and_keep_the_row_count():
    assert _sums([(0, 0, 0), (1, 2, 3), (0, 0, 0), (4, 0, 6)], 3) == [5, 2, 9]
    assert _sums([(0, 0), (0, 0)], 2) == [0, 0]
    assert _sums([(7, 8)], 2) == [7, 8]


UUIDS = st.uuids().map(str)
TIMES = st.datetimes(timezones=st.just(UTC)).map(fastparse.utc_text)
# Spellings a whole-batch shape check must not wave through: a newline splitting one text into two lines of the
# usual shape, upper case, a missing or short fraction, an impossible date.
ODD_TEXTS = st.sampled_from(["00000000-0000-0000-0000-000000000000\n00000000-0000-0000-0000-000000000000",
                             "0193A6F0-0000-7000-8000-000000000000", "2026-12-01T08:30:15Z", "2026-12-01T08:30:15.1Z",
                             "2026-02-30T08:30:15.000001Z", "2026-12-01T08:30:15.000001Z\n2026-12-01T08:30:15.000001Z",
                             "", "2026-12-01T08:30:15.000001+00:00"])


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([fastparse.UUID_TEXT, fastparse.UTC_TEXT]), st.data())
def test_the_whole_batch_text_check_is_the_pattern_on_every_text(pattern, data):
    usual = UUIDS if pattern == fastparse.UUID_TEXT else TIMES
    values = data.draw(st.lists(usual | ODD_TEXTS, max_size=8) | st.lists(usual, max_size=8))
    check = re.compile(pattern)
    assert fastparse._canonical(values, pattern) == all(check.match(v) for v in values)

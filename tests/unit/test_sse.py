"""The stream scanner forwards bytes untouched, finds usage, and strips only what we injected."""

import orjson
from hypothesis import given
from hypothesis import strategies as st

from aimeter.events import UsageSource
from aimeter.gateway.providers.openai import OpenAIChatStream
from aimeter.gateway.sse import StreamScanner
from tests.support.usage_checks import check_extracted


def chunk(content: str | None, usage: dict | str | None = "absent", choices: bool = True) -> bytes:
    body: dict = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
                  "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}] if choices else []}
    if usage != "absent":
        body["usage"] = usage
    return b"data: " + orjson.dumps(body) + b"\n\n"


def scanner_(strip: bool = False) -> StreamScanner:
    return StreamScanner(OpenAIChatStream(), strip_injected_usage=strip)


USAGE = {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}
WITH_INJECTED = chunk("Hel", None) + chunk("lo", None) + chunk(None, USAGE, choices=False) + b"data: [DONE]\n\n"
AS_CLIENT_WOULD_SEE = chunk("Hel") + chunk("lo") + b"data: [DONE]\n\n"


def test_stripping_restores_exactly_what_the_client_would_have_seen():
    scanner = scanner_(strip=True)
    out = scanner.feed(WITH_INJECTED) + scanner.finish()
    assert out == AS_CLIENT_WOULD_SEE
    got = scanner.usage()
    assert (got.source, got.usage.input_tokens, got.usage.output_tokens) == (UsageSource.REPORTED, 9, 3)
    assert scanner.saw_done


def test_without_injection_bytes_pass_through_unchanged():
    scanner = scanner_()
    out = scanner.feed(WITH_INJECTED) + scanner.finish()
    assert out == WITH_INJECTED
    assert scanner.usage().usage.input_tokens == 9


def test_content_mentioning_usage_null_is_not_touched():
    text = chunk('say "usage": null please', None)
    scanner = scanner_(strip=True)
    out = scanner.feed(text)
    assert orjson.loads(out[6:])["choices"][0]["delta"]["content"] == 'say "usage": null please'
    assert b'"usage":null' not in out


def test_truncated_stream_is_reported():
    scanner = scanner_()
    scanner.feed(chunk("a")[:-1])
    scanner.finish()
    assert not scanner.saw_done
    assert scanner.problem


@given(st.lists(st.integers(min_value=1, max_value=40), max_size=30))
def test_any_split_of_the_stream_gives_the_same_output(cuts):
    """Network chunking must not change what is forwarded or what usage is found."""
    scanner = scanner_(strip=True)
    out, pos = b"", 0
    for cut in cuts:
        out += scanner.feed(WITH_INJECTED[pos:pos + cut])
        pos += cut
    out += scanner.feed(WITH_INJECTED[pos:]) + scanner.finish()
    assert out == AS_CLIENT_WOULD_SEE
    assert scanner.usage().usage.output_tokens == 3


@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_forwarded_unchanged_unless_stripping_which_only_removes(data):
    """Without stripping the scanner forwards every byte as it came; stripping only ever drops bytes."""
    scanner = scanner_(strip=False)
    assert scanner.feed(data) + scanner.finish() == data
    check_extracted(scanner.usage())
    scanner = scanner_(strip=True)
    assert len(scanner.feed(data) + scanner.finish()) <= len(data)
    check_extracted(scanner.usage())


def test_cancelled_stream_without_usage_is_estimated_from_streamed_text():
    scanner = scanner_()
    scanner.feed(chunk("one two three four five six seven eight"))  # 39 bytes of text
    got = scanner.usage()
    assert got.source is UsageSource.ESTIMATED
    assert got.usage.output_tokens == 10  # ceil(39 / 4)
    assert got.model_served == "gpt-4o-mini"


def test_stream_with_nothing_generated_reports_no_usage():
    scanner = scanner_()
    scanner.feed(chunk(None))
    assert scanner.usage().source is UsageSource.NONE


@given(st.lists(st.integers(min_value=1, max_value=40), max_size=30))
def test_crlf_framed_streams_split_anywhere_give_the_same_events(cuts):
    """Some servers end SSE lines with CRLF: the fast terminator search must not change what is found."""
    stream = WITH_INJECTED.replace(b"\n", b"\r\n")
    scanner = scanner_(strip=True)
    out, pos = b"", 0
    for cut in cuts:
        out += scanner.feed(stream[pos:pos + cut])
        pos += cut
    out += scanner.feed(stream[pos:]) + scanner.finish()
    assert out == AS_CLIENT_WOULD_SEE.replace(b"\n", b"\r\n")
    assert scanner.usage().usage.output_tokens == 3
    assert scanner.saw_done


@given(st.sampled_from([b',"usage":null', b', "usage" : null', b'"usage":null,', b'"usage": null ,', b'"usage":{}']),
       st.sampled_from([b'{"a":1', b'{"usage":null', b'{"choices":[]']), st.booleans())
def test_fast_null_usage_strip_equals_the_regex(field, prefix, twice):
    from aimeter.gateway.sse import _NULL_USAGE, _strip_null_usage  # noqa: PLC0415 - private helpers under test

    event = b"data: " + prefix + field + (field if twice else b"") + b"}\n\n"
    assert _strip_null_usage(event) == _NULL_USAGE.sub(b"", event)

"""A stream that reports no input tokens still billed its prompt: the gateway estimates it from the request."""

from aimeter.events import TokenUsage, UsageSource
from aimeter.gateway.streams import estimate_tokens, prompt_text, with_prompt_estimate
from aimeter.gateway.usage import Extracted

IMAGE = "data:image/png;base64," + "A" * 4000


def test_openai_chat_text_and_parts_count_images_do_not():
    request = {"model": "gpt-4o", "stream": True, "user": "u-1", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "What is in this picture?"},
                                     {"type": "image_url", "image_url": {"url": IMAGE}}]}]}
    text = prompt_text(request)
    assert "Be brief." in text
    assert "What is in this picture?" in text
    assert "AAAA" not in text
    assert "gpt-4o" not in text
    assert "u-1" not in text
    assert "image_url" not in text


def test_anthropic_gemini_responses_and_completions_shapes():
    anthropic = {"system": [{"type": "text", "text": "sys"}], "messages": [
        {"role": "user", "content": [{"type": "text", "text": "hi"},
                                     {"type": "image", "source": {"type": "base64", "data": "QUJD" * 500}}]}]}
    gemini = {"systemInstruction": {"parts": [{"text": "sys"}]},
              "contents": [{"role": "user", "parts": [{"text": "hi"}, {"inline_data": {"data": "QUJD" * 500}}]}]}
    responses = {"instructions": "sys", "input": [{"role": "user", "content": "hi"},
                                                  {"type": "function_call_output", "output": "42"}]}
    completions = {"prompt": ["sys", "hi"]}
    for request in (anthropic, gemini, responses, completions):
        text = prompt_text(request)
        assert "sys" in text
        assert "hi" in text
        assert "QUJD" not in text


def test_tool_schemas_are_part_of_the_prompt():
    request = {"messages": [{"role": "user", "content": "hi"}],
               "tools": [{"type": "function", "function": {"name": "lookup", "description": "Find a record"}}]}
    assert "Find a record" in prompt_text(request)


def test_an_estimated_stream_gets_its_prompt_estimated_too():
    request = {"messages": [{"role": "user", "content": "x" * 400}]}
    partial = Extracted(TokenUsage(output_tokens=7), UsageSource.ESTIMATED, "gpt-4o", problem="cancelled")
    got = with_prompt_estimate(partial, request)
    assert got.source is UsageSource.ESTIMATED
    assert got.usage.output_tokens == 7
    assert got.usage.input_tokens == estimate_tokens("x" * 400) == 100
    assert "input tokens estimated from the prompt" in got.problem
    assert "cancelled" in got.problem


def test_a_stream_cancelled_before_any_text_is_billed_for_its_prompt():
    got = with_prompt_estimate(Extracted(TokenUsage(), UsageSource.NONE), {"prompt": "abcdefgh"})
    assert (got.source, got.usage.input_tokens, got.usage.output_tokens) == (UsageSource.ESTIMATED, 2, 0)


def test_reported_or_already_known_input_is_never_replaced():
    reported = Extracted(TokenUsage(output_tokens=3), UsageSource.REPORTED)
    assert with_prompt_estimate(reported, {"prompt": "abcdefgh"}) is reported
    known = Extracted(TokenUsage(input_tokens=50, output_tokens=3), UsageSource.ESTIMATED)
    assert with_prompt_estimate(known, {"prompt": "abcdefgh"}) is known
    empty = Extracted(TokenUsage(), UsageSource.NONE)
    assert with_prompt_estimate(empty, {"model": "m"}) is empty

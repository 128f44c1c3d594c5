"""OpenAI usage normalization, against the response shapes OpenAI documents."""

from aimeter.events import UsageSource
from aimeter.gateway.providers.openai import from_openai_body

# Chat completion object as documented (usage block with both details objects).
DOC_RESPONSE = {
    "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
    "object": "chat.completion",
    "created": 1741570283,
    "model": "gpt-4o-2024-08-06",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi", "refusal": None, "annotations": []},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {
        "prompt_tokens": 1117,
        "completion_tokens": 46,
        "total_tokens": 1163,
        "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 12, "audio_tokens": 0, "accepted_prediction_tokens": 0,
                                      "rejected_prediction_tokens": 0},
    },
    "service_tier": "default",
    "system_fingerprint": "fp_fc9f1d7035",
}


def test_cached_tokens_are_a_subset_of_prompt_tokens_never_added():
    got = from_openai_body(DOC_RESPONSE)
    assert got.source is UsageSource.REPORTED
    assert got.usage.input_tokens == 1117  # not 1117 + 1024
    assert got.usage.cache_read_input_tokens == 1024
    assert got.usage.output_tokens == 46
    assert got.usage.reasoning_output_tokens == 12
    assert got.model_served == "gpt-4o-2024-08-06"


def test_missing_details_objects_mean_zero():
    body = {"model": "m", "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}
    got = from_openai_body(body)
    assert (got.usage.input_tokens, got.usage.cache_read_input_tokens, got.usage.output_tokens) == (5, 0, 7)


def test_null_details_from_self_hosted_servers_are_tolerated():
    body = {"model": "m", "usage": {"prompt_tokens": 5, "completion_tokens": 7, "prompt_tokens_details": None}}
    assert from_openai_body(body).usage.input_tokens == 5


def test_no_usage_block_is_flagged_not_zero_priced_silently():
    got = from_openai_body({"model": "m", "choices": []})
    assert got.source is UsageSource.NONE
    assert "no usage" in got.problem


def test_negative_or_wrong_type_counts_are_flagged():
    assert from_openai_body({"usage": {"prompt_tokens": -3}}).source is UsageSource.NONE
    assert from_openai_body({"usage": {"prompt_tokens": "12"}}).source is UsageSource.NONE
    assert from_openai_body({"usage": {"prompt_tokens": True}}).source is UsageSource.NONE


def test_cached_more_than_prompt_is_rejected_as_impossible():
    body = {"usage": {"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 11}}}
    got = from_openai_body(body)
    assert got.source is UsageSource.NONE
    assert "exceed" in got.problem


def test_llamacpp_timings_become_compute_seconds():
    body = {"model": "llama", "usage": {"prompt_tokens": 10, "completion_tokens": 20},
            "timings": {"prompt_n": 10, "prompt_ms": 120.5, "predicted_n": 20, "predicted_ms": 879.5}}
    assert from_openai_body(body).compute_seconds == 1.0


def test_not_an_object():
    assert from_openai_body([1, 2]).source is UsageSource.NONE

"""What every API's stream-usage reader implements, and the shared estimate for cancelled streams.

The gateway's stream framing (SSE or NDJSON) hands each *decoded* event to a ``StreamUsage``
only when its cheap byte test says the event may matter, so the common content chunk costs
no JSON parse on the hot path. Raw content events are kept (bounded by the response size) and
decoded only if the stream ends without usage, to estimate the tokens already generated.

Also here, pure and shared by every API: how a relayed stream ended (``stream_end``), the usage to
record once the answer is out (``settle``: prompt estimate, implausible-output flag), and the event's
diagnosis fields (``usage_problem``, ``usage_flags``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Protocol

import orjson

from aimeter.events import Status, TokenUsage, UsageSource
from aimeter.events.usage import MAX_FLAGS_LEN, MAX_PROBLEM_LEN
from aimeter.gateway.usage import Extracted, implausible_output, joined


class StreamUsage(Protocol):
    """Reads one API's stream events in order and reports the usage they carried."""

    def interesting(self, payload: bytes) -> bool:
        """Cheap byte test: may this event carry usage or the served model? False skips the decode."""
        ...

    def on_event(self, event: Any, event_type: str) -> None:
        """A decoded JSON event (SSE ``data`` or one NDJSON line); ``event_type`` is the SSE ``event:`` name or ''."""
        ...

    def text_of(self, event: Any) -> str:
        """Generated text in one decoded event (for estimating a stream that carried no usage)."""
        ...

    def result(self) -> Extracted:
        """Usage seen so far; ``UsageSource.NONE`` when the stream carried none."""
        ...


def estimate_tokens(text: str) -> int:
    """Tokens in ``text`` when no offline tokenizer exists for the model.

    BPE tokenizers of current models average ~4 bytes of English per token; we round up so an
    estimate errs towards what the provider bills. Rows using it say ``usage_source=estimated``.
    """
    return math.ceil(len(text.encode("utf-8")) / 4) if text else 0


# Request fields whose string values are prompt text in some API (OpenAI chat/completions/responses,
# Anthropic, Gemini, Ollama). Image and audio payloads sit under other keys (``url``, ``data``,
# ``inline_data``), so base64 never counts as text.
_PROMPT_KEYS = frozenset({"messages", "content", "text", "system", "instructions", "prompt", "input", "contents",
                          "parts", "systemInstruction", "system_instruction", "arguments", "output"})
_TOOL_KEYS = ("tools", "functions")  # schemas the provider renders into the prompt


def prompt_text(request: dict[str, Any]) -> str:
    """The text a request sends as its prompt, for estimating input tokens when a stream reports none."""
    found: list[str] = []

    def walk(value: Any, counted: bool) -> None:
        if isinstance(value, str):
            if counted:
                found.append(value)
        elif isinstance(value, list):
            for item in value:
                walk(item, counted)
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, key in _PROMPT_KEYS)

    walk(request, False)
    for key in _TOOL_KEYS:
        if request.get(key):
            found.append(orjson.dumps(request[key]).decode())
    return "\n".join(found)


def with_prompt_estimate(extracted: Extracted, request: dict[str, Any]) -> Extracted:
    """A stream that reported no input tokens (an OpenAI stream cancelled before its usage chunk) still
    billed its prompt: estimate the prompt's tokens rather than record 0. Reported counts are never touched.

    A stream that carried the provider's error instead of an answer (Anthropic's ``overloaded_error``,
    Gemini's error chunk, ``response.failed``) is not estimated: the provider did not bill what it refused."""
    if extracted.source is UsageSource.REPORTED or extracted.usage.input_tokens or extracted.error_type:
        return extracted
    tokens = estimate_tokens(prompt_text(request))
    if not tokens:
        return extracted
    usage = extracted.usage.model_copy(update={"input_tokens": tokens})
    problem = joined(extracted.problem, "input tokens estimated from the prompt")
    return replace(extracted, usage=usage, source=UsageSource.ESTIMATED, problem=problem)


def estimate_output(reported: Extracted, text: str) -> Extracted:
    """A stream without usage that streamed ``text``: its output tokens, estimated (``reported`` otherwise).

    The reader's error type and flags are kept: an error after some content is still the provider's error."""
    if reported.source is not UsageSource.NONE or not text:
        return reported
    problem = joined(reported.problem if reported.error_type else "",
                     "stream carried no usage; output tokens estimated from the streamed text")
    return replace(reported, usage=TokenUsage(output_tokens=estimate_tokens(text)), source=UsageSource.ESTIMATED,
                   problem=problem)


def stream_end(*, framed: bool, complete: bool, cancelled: bool, extracted: Extracted) -> tuple[Status, str]:
    """How a relayed 200 stream ended, and the gateway's own reason ('' when there is none to add).

    * The provider's error inside the stream makes it ``upstream_error``, however the stream then ended.
    * A stream that reached its documented end (``[DONE]``, ``message_stop``, ``response.completed``,
      Gemini's last chunk) is ``ok`` even if the client hung up right after: the openai SDK closes the
      connection as soon as it reads ``[DONE]``, which raced with the upstream's last bytes.
    * Otherwise a client that left is ``client_cancelled``, and a framed stream that just stopped is broken.
    """
    if extracted.error_type:
        return Status.UPSTREAM_ERROR, ""
    if complete:
        return Status.OK, ""
    if cancelled:
        return Status.CLIENT_CANCELLED, ""
    if framed:
        return Status.BROKEN_STREAM, "stream ended before its documented end"
    return Status.OK, ""


def settle(extracted: Extracted, request: Mapping[str, Any], *, stream: bool, http_status: int) -> Extracted:
    """The usage to record once the answer is relayed: a 2xx stream's prompt is estimated when unreported (the
    upstream took it, so it billed it), and output far above the request's limit is flagged."""
    if stream and 200 <= http_status < 300 and isinstance(request, dict):
        extracted = with_prompt_estimate(extracted, request)
    flags = implausible_output(request, extracted.usage)
    return replace(extracted, flags=(*extracted.flags, *flags)) if flags else extracted


def usage_problem(gateway_problem: str, extracted: Extracted) -> str:
    """The event's ``usage_problem``: the gateway's reason (timeout, cut stream) and the usage reader's, each once."""
    if not gateway_problem:  # the common case, with nothing to join
        return extracted.problem[:MAX_PROBLEM_LEN]
    return joined(gateway_problem, extracted.problem)[:MAX_PROBLEM_LEN]


def usage_flags(extracted: Extracted) -> str:
    """The event's ``usage_flags``: the distinct ``UsageFlag`` codes, comma-separated."""
    return ",".join(dict.fromkeys(extracted.flags))[:MAX_FLAGS_LEN] if extracted.flags else ""

"""Read each API's request body into what the fake needs: model, directive text, default prompt size.

Each reader checks what the real API requires (and answers 400 like it would), then reduces the
body to a ``Request``. The directive is read from the *last* turn of the conversation (message,
content, input item) or from the prompt string, so it passes through any proxy unchanged.

Default prompt size (no ``prompt=`` directive), a deterministic stand-in for a tokenizer: message-
based APIs count 4 per message plus its whitespace-split words (system prompts included); prompt-
string APIs (legacy Completions, Ollama generate, Embeddings) count the words of each prompt, and a
pre-tokenized prompt (list of token ids) counts its length.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import orjson

from aimeter.fake_upstream.openai_shapes import StreamStyle

_DEFAULT_STYLE = StreamStyle()


class RequestError(Exception):
    """A request the fake refuses with 400, in the API's own error shape."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


class Call(NamedTuple):
    """What the URL adds to the body: path parameters (Gemini's model) and the query (``alt=sse``)."""

    params: Mapping[str, str]
    query: Mapping[str, str]


class Request(NamedTuple):
    """One request, reduced to what every fake API plans from."""

    model: str
    default_prompt: int
    directive_text: str
    limit: int | None
    stream: bool
    style: StreamStyle = _DEFAULT_STYLE
    generates: bool = True  # False for embeddings, which produce no output tokens


def load_json(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or the 400 every API gives for anything else."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise RequestError(
            "We could not parse the JSON body of your request. The API expects a JSON payload."
        ) from None
    if not isinstance(body, dict):
        raise RequestError("The request body must be a JSON object.")
    return body


def message_text(message: Mapping[str, Any]) -> str:
    """The text of a message: string content, or its text parts joined (other parts ignored)."""
    return parts_text(message.get("content"))


def parts_text(content: Any) -> str:
    """A string, or the ``text`` of every part in a list of parts (OpenAI, Anthropic, Gemini all use this)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p["text"] for p in content if isinstance(p, Mapping) and isinstance(p.get("text"), str))
    return ""


def count_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """Deterministic stand-in for a tokenizer: 4 per message plus its whitespace-split words."""
    return sum(4 + len(message_text(m).split()) for m in messages)


def _model(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError("you must provide a model parameter", "model")
    return model


def _messages(body: Mapping[str, Any], key: str = "messages") -> list[dict[str, Any]]:
    messages = body.get(key)
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise RequestError(f"Missing required parameter: '{key}' (a non-empty array of objects).", key,
                           "missing_required_parameter")
    return messages


def token_limit(body: Mapping[str, Any] | None, *names: str) -> int | None:
    """The first of ``names`` that is set, as a positive integer; None when none is set."""
    for name in names:
        value = body.get(name) if isinstance(body, Mapping) else None
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RequestError(f"Invalid '{name}': expected a positive integer, got {value!r}.", name)
        return value
    return None


def _style(body: Mapping[str, Any]) -> StreamStyle:
    """`stream_options` as sent; OpenAI includes obfuscation unless it is turned off."""
    options = body.get("stream_options")
    if options is None:
        return _DEFAULT_STYLE
    if not isinstance(options, dict):
        raise RequestError("Invalid 'stream_options': expected an object.", "stream_options")
    return StreamStyle(options.get("include_usage") is True, options.get("include_obfuscation") is not False)


def _prompts(value: Any, name: str) -> list[Any]:
    """A prompt / input field: a string, token ids, or a non-empty list of either."""
    if isinstance(value, str) or (isinstance(value, list) and value and all(isinstance(t, int) for t in value)):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str | list) for v in value):
        return value
    raise RequestError(f"Invalid '{name}': expected a string, an array of strings or an array of tokens.", name)


def _prompt_size(prompts: list[Any]) -> int:
    return sum(max(1, len(p.split())) if isinstance(p, str) else len(p) for p in prompts)


def _last_text(prompts: list[Any]) -> str:
    return next((p for p in reversed(prompts) if isinstance(p, str)), "")


# What a pydantic-validating server (vLLM, SGLang) reads as true for ``"stream"``: 1 and "true" stream there.
_LAX_TRUE = frozenset({1, "1", "on", "t", "true", "y", "yes"})


def _streams(value: Any) -> bool:
    """``"stream"`` as vLLM and SGLang read it (pydantic's lax bool), so ``"stream": 1`` streams as it does there."""
    if isinstance(value, str):
        return value.lower() in _LAX_TRUE
    return value is True or (type(value) is int and value == 1)


def read_chat(body: dict[str, Any], _call: Call | None = None) -> Request:
    """POST /v1/chat/completions."""
    model, messages = _model(body), _messages(body)
    limit = token_limit(body, "max_completion_tokens", "max_tokens")
    return Request(model, count_prompt_tokens(messages), message_text(messages[-1]), limit,
                   _streams(body.get("stream")), _style(body))


def read_completions(body: dict[str, Any], _call: Call | None = None) -> Request:
    """POST /v1/completions (legacy): ``prompt`` is a string, strings, or token ids."""
    model, prompts = _model(body), _prompts(body.get("prompt"), "prompt")
    return Request(model, _prompt_size(prompts), _last_text(prompts), token_limit(body, "max_tokens"),
                   _streams(body.get("stream")), _style(body))


def read_embeddings(body: dict[str, Any], _call: Call | None = None) -> Request:
    """POST /v1/embeddings: ``input`` like a legacy prompt; no output tokens, no streaming."""
    model, inputs = _model(body), _prompts(body.get("input"), "input")
    return Request(model, _prompt_size(inputs), _last_text(inputs), None, stream=False, generates=False)


def read_responses(body: dict[str, Any], _call: Call | None = None) -> Request:
    """POST /v1/responses: ``input`` is a string or a list of input items (messages)."""
    model, given = _model(body), body.get("input")
    if isinstance(given, str):
        items: list[dict[str, Any]] = [{"role": "user", "content": given}]
    elif isinstance(given, list) and given and all(isinstance(i, dict) for i in given):
        items = given
    else:
        raise RequestError("Missing required parameter: 'input' (a string or a non-empty array of items).", "input")
    instructions = body.get("instructions")
    system = [{"content": instructions}] if isinstance(instructions, str) else []
    return Request(model, count_prompt_tokens(system + items), message_text(items[-1]),
                   token_limit(body, "max_output_tokens"), body.get("stream") is True)


def read_anthropic(body: dict[str, Any], _call: Call | None = None) -> Request:
    """POST /v1/messages: ``max_tokens`` is required by Anthropic; ``system`` counts as one more message."""
    model, messages = _model(body), _messages(body)
    limit = token_limit(body, "max_tokens")
    if limit is None:
        raise RequestError("max_tokens: Field required", "max_tokens")
    system = [{"content": body["system"]}] if body.get("system") else []
    return Request(model, count_prompt_tokens(system + messages), message_text(messages[-1]), limit,
                   body.get("stream") is True)


def read_gemini(body: dict[str, Any], call: Call) -> Request:
    """POST /v1beta/models/{model}:(stream)generateContent: the model is in the path, turns in ``contents``."""
    contents = body.get("contents")
    if isinstance(contents, dict):
        contents = [contents]
    if not isinstance(contents, list) or not contents or not all(isinstance(c, dict) for c in contents):
        raise RequestError("* GenerateContentRequest.contents: contents is not specified", "contents")
    turns = [{"content": c.get("parts")} for c in contents]
    system = body.get("systemInstruction") or body.get("system_instruction")
    if isinstance(system, dict):
        turns.insert(0, {"content": system.get("parts")})
    config = body.get("generationConfig") or body.get("generation_config")
    limit = token_limit(config if isinstance(config, dict) else None, "maxOutputTokens", "max_output_tokens")
    return Request(call.params.get("model", ""), count_prompt_tokens(turns), message_text(turns[-1]), limit,
                   call.params.get("method") == "streamGenerateContent")


def _ollama_limit(body: Mapping[str, Any]) -> int | None:
    """``options.num_predict``; -1 (Ollama's "until the context is full") means no limit."""
    options = body.get("options")
    if isinstance(options, dict) and options.get("num_predict") == -1:
        return None
    return token_limit(options if isinstance(options, dict) else None, "num_predict")


def read_ollama_chat(body: dict[str, Any], _call: Call | None = None) -> Request:
    """POST /api/chat: streams unless ``"stream": false`` (Ollama's default is to stream)."""
    model, messages = _model(body), _messages(body)
    return Request(model, count_prompt_tokens(messages), message_text(messages[-1]), _ollama_limit(body),
                   body.get("stream") is not False)


def read_ollama_generate(body: dict[str, Any], _call: Call | None = None) -> Request:
    """POST /api/generate: one ``prompt`` string (plus an optional ``system``); streams by default."""
    model, prompt = _model(body), body.get("prompt")
    if not isinstance(prompt, str):
        raise RequestError("prompt must be a string", "prompt")
    system = body.get("system")
    size = _prompt_size([prompt]) + (_prompt_size([system]) if isinstance(system, str) else 0)
    return Request(model, size, prompt, _ollama_limit(body), body.get("stream") is not False)

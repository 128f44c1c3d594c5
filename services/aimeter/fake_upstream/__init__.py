"""Project-owned fake upstream LLM API for the demo, the tests and the benchmarks.

Real LLM APIs are unreachable from here, so this aiohttp server replays the response shapes
each provider documents: OpenAI Chat Completions (which vLLM, SGLang, TGI and llama.cpp also
speak, with llama.cpp's `timings` on request), legacy Completions, Embeddings and Responses;
Anthropic Messages; Gemini generateContent / streamGenerateContent; Ollama /api/chat and
/api/generate. Usage (in each provider's own semantics), length, streaming, latency and errors
are steered by one directive grammar in the request body (see `aimeter.fake_upstream.plan`).

Run it with `python -m aimeter.fake_upstream.app --port 8090`, or in-process with
`await serve(host, port)` from `aimeter.fake_upstream.app`.
"""

"""The Azure OpenAI unit: OpenAI's shapes, usage and errors on deployment URLs, keyed by ``api-key``.

Clients call ``/openai/deployments/<deployment>/{chat/completions,completions,embeddings}``; the deployment
is our model name. Upstream is ``https://<resource>.openai.azure.com/openai/deployments/<upstream model>/...``
with the client's ``api-version`` when it is a safe token (else ``AZURE_API_VERSION``), and the credential
in ``api-key``. Azure backends also serve the plain OpenAI routes (``/v1/chat/completions``), which map to
the same deployment URL.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from aimeter.gateway.providers.base import ApiSpec, Match, Provider, query_value
from aimeter.gateway.providers.openai import OPENAI_CHAT, OPENAI_COMPLETIONS, OPENAI_EMBEDDINGS

AZURE_API_VERSION = "2024-10-21"
AZURE = frozenset({"azure_openai"})


def _deployment(spec: ApiSpec) -> ApiSpec:
    """Azure deployment URLs: same shapes, the deployment (our model name) in the path, Azure backends only."""
    return ApiSpec(spec.api, AZURE, spec.from_body, spec.stream_reader, spec.error, spec.upstream_suffix,
                   is_stream=spec.is_stream, inject_usage=spec.inject_usage, model_in_path=True)


def target(base: str, match: Match, upstream_model: str, query: str) -> str:
    version = query_value(query, "api-version") or AZURE_API_VERSION
    return (f"{base}/openai/deployments/{quote(upstream_model, safe='')}{match.spec.upstream_suffix}"
            f"?api-version={version}")


_DEPLOYMENT = r"/openai/deployments/(?P<model>[A-Za-z0-9._-]{1,128})"
PROVIDER = Provider(
    "azure_openai", ("azure_openai",),
    routes={},
    patterns=tuple((re.compile(_DEPLOYMENT + spec.upstream_suffix), _deployment(spec))
                   for spec in (OPENAI_CHAT, OPENAI_COMPLETIONS, OPENAI_EMBEDDINGS)),
    key_header="api-key",
    credential=("api-key", ""),
    target=target,
)

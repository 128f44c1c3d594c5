"""Config errors: every problem at once, with file:line, in the product's words; the full example loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from aimeter.config import BackendKind, ConfigError, load_config, parse_config

REPO = Path(__file__).resolve().parents[2]

BROKEN = """\
backends:
  openai:
    kind: openai
    base_url: https://api.openai.com/v1
    deployment: proprietary
    provider: openai
  gpu-box:
    kind: openai_compatible
    base_url: http://x/v1
    deployment: self_hosted
    provider: vllm
    gpu: {gpu_type: H100, gpu_count: 0, usd_per_gpu_hour: '2', sustained_tokens_per_second: 10}
    colour: blue
models:
  a: {backend: opneai}
  Mistral: {backend: gpu-box, upstreem: x}
"""


def test_every_problem_is_reported_at_once_with_its_line() -> None:
    with pytest.raises(ConfigError) as failed:
        parse_config(BROKEN, "cfg.yaml")
    lines = str(failed.value).splitlines()[1:]
    assert [line.strip() for line in lines] == [
        "cfg.yaml:12: backends.gpu-box.gpu.gpu_count: Input should be greater than or equal to 1",
        "cfg.yaml:13: backends.gpu-box.colour: is not a known field (check its spelling)",
        "cfg.yaml:15: models.a.backend: unknown backend 'opneai' (declared: gpu-box, openai)",
        "cfg.yaml:16: models.Mistral.upstreem: is not a known field (check its spelling)",
    ]


def test_an_unknown_backend_alone_is_still_reported() -> None:
    text = "backends: {}\nmodels:\n  m: {backend: nope}\n"
    with pytest.raises(ConfigError, match=r"cfg.yaml:3: models.m.backend: unknown backend 'nope'"):
        parse_config(text, "cfg.yaml")


def test_a_gpu_list_reports_its_own_errors_not_the_single_period_branch() -> None:
    text = """\
backends:
  b:
    kind: openai_compatible
    base_url: http://x/v1
    deployment: self_hosted
    provider: vllm
    gpu:
      - {gpu_type: H100, gpu_count: 1, usd_per_gpu_hour: '2', sustained_tokens_per_second: 10,
         effective_to: 2026-01-01T00:00:00Z}
      - {gpu_type: H100, gpu_count: 2, sustained_tokens_per_second: 10, effective_from: 2026-01-01T00:00:00Z}
models: {}
"""
    with pytest.raises(ConfigError) as failed:
        parse_config(text, "cfg.yaml")
    lines = str(failed.value).splitlines()[1:]
    assert len(lines) == 1, lines
    assert "cfg.yaml:10: backends.b.gpu.1: give exactly one of usd_per_gpu_hour and usd_per_node_hour" in lines[0]


def test_the_all_backends_example_covers_every_kind() -> None:
    config = load_config(REPO / "examples" / "all-backends.yaml")
    assert {backend.kind for backend in config.backends.values()} == set(BackendKind)
    assert config.route("gpt-4o-prod") is not None

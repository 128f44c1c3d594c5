"""The fakes of OpenAI's and Anthropic's admin usage and cost APIs (issue 19) answer in the documented shapes:
every bucket of the window (empty ones too), null ids where not grouped, paging by ``limit`` with
``has_more``/``next_page``, daily-only costs, cost units (USD number / cents string), and each provider's
error shape for a wrong key or a bad parameter."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from tests.fixtures.fake_upstream import base_url, on_session_loop

__all__ = ["base_url"]

OPENAI = {"Authorization": "Bearer sk-admin-unit"}
ANTHROPIC = {"x-api-key": "sk-ant-admin01-unit", "anthropic-version": "2023-06-01"}
DAY = 1793577600  # 2026-11-02T00:00:00Z


async def call(method: str, url: str, *, headers: dict[str, str] | None = None, body: Any = None,
               params: list[tuple[str, str]] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.request(
            method, url, headers=headers, params=params, data=orjson.dumps(body) if body is not None else None
    ) as resp:
        return resp.status, orjson.loads(await resp.read())


async def seed(base: str) -> None:
    status, _ = await call("POST", f"{base}/fake-admin/books", body={
        "openai": {"admin_key": "sk-admin-unit",
                   "usage": [{"at": "2026-11-02T10:15:00Z", "model": "gpt-4o", "project_id": "proj_a",
                              "input_tokens": 100, "input_cached_tokens": 40, "output_tokens": 10,
                              "num_model_requests": 2},
                             {"at": "2026-11-02T10:45:00Z", "model": "gpt-4o", "project_id": None,
                              "input_tokens": 1, "output_tokens": 1, "num_model_requests": 1}],
                   "costs": [{"at": "2026-11-02T00:00:00Z", "project_id": "proj_a", "line_item": "gpt-4o, input",
                              "amount": "0.0123"},
                             {"at": "2026-11-02T00:00:00Z", "project_id": "proj_a", "line_item": "gpt-4o, output",
                              "amount": "0.0007"}]},
        "anthropic": {"admin_key": "sk-ant-admin01-unit",
                      "usage": [{"at": "2026-11-02T10:15:00Z", "model": "claude-x", "workspace_id": None,
                                 "uncached_input_tokens": 7, "cache_read_input_tokens": 3, "output_tokens": 2,
                                 "cache_creation": {"ephemeral_5m_input_tokens": 1}}],
                      "costs": [{"at": "2026-11-02T00:00:00Z", "workspace_id": None, "model": "claude-x",
                                 "description": "Claude X input", "token_type": "uncached_input_tokens",
                                 "cost_type": "tokens", "amount": "12.5"},
                                {"at": "2026-11-02T00:00:00Z", "workspace_id": None, "model": "claude-x",
                                 "description": "Claude X input", "token_type": "uncached_input_tokens",
                                 "cost_type": "tokens", "amount": "0.25"}]}})
    assert status == 200


@on_session_loop
async def test_openai_usage_pages_buckets_and_nulls(base_url):
    await seed(base_url)
    params = [("start_time", str(DAY)), ("end_time", str(DAY + 86400)), ("bucket_width", "1h"), ("limit", "11"),
              ("group_by", "model")]
    status, first = await call("GET", f"{base_url}/v1/organization/usage/completions", headers=OPENAI,
                               params=params)
    assert status == 200
    assert (first["object"], len(first["data"]), first["has_more"]) == ("page", 11, True)
    assert first["data"][0] == {"object": "bucket", "start_time": DAY, "end_time": DAY + 3600, "results": []}
    [result] = first["data"][10]["results"]  # 10:00: both records, one group (model), project not grouped: null
    assert result == {"object": "organization.usage.completions.result", "project_id": None, "user_id": None,
                      "api_key_id": None, "model": "gpt-4o", "batch": None, "service_tier": None,
                      "input_tokens": 101, "input_cached_tokens": 40, "output_tokens": 11,
                      "input_audio_tokens": 0, "output_audio_tokens": 0, "num_model_requests": 3}
    _, second = await call("GET", f"{base_url}/v1/organization/usage/completions", headers=OPENAI,
                           params=[*params, ("page", first["next_page"])])
    _, third = await call("GET", f"{base_url}/v1/organization/usage/completions", headers=OPENAI,
                          params=[*params, ("page", second["next_page"])])
    assert [len(p["data"]) for p in (first, second, third)] == [11, 11, 2]
    assert (third["has_more"], third["next_page"]) == (False, None)


@on_session_loop
async def test_openai_costs_are_daily_usd_numbers(base_url):
    await seed(base_url)
    params = [("start_time", str(DAY)), ("end_time", str(DAY + 86400)), ("group_by", "project_id")]
    status, body = await call("GET", f"{base_url}/v1/organization/costs", headers=OPENAI, params=params)
    assert status == 200
    assert body["data"][0]["results"] == [{"object": "organization.costs.result", "project_id": "proj_a",
                                           "line_item": None, "api_key_id": None,
                                           "amount": {"value": 0.013, "currency": "usd"}}]
    status, error = await call("GET", f"{base_url}/v1/organization/costs", headers=OPENAI,
                               params=[*params, ("bucket_width", "1h")])
    assert status == 400
    assert error["error"]["type"] == "invalid_request_error"
    status, error = await call("GET", f"{base_url}/v1/organization/costs", headers={"Authorization": "Bearer x"},
                               params=params)
    assert status == 401
    assert error["error"]["code"] == "invalid_api_key"


@on_session_loop
async def test_anthropic_usage_and_cost_shapes(base_url):
    await seed(base_url)
    params = [("starting_at", "2026-11-02T00:00:00Z"), ("ending_at", "2026-11-03T00:00:00Z"),
              ("bucket_width", "1d"), ("group_by[]", "model"), ("group_by[]", "workspace_id")]
    status, usage = await call("GET", f"{base_url}/v1/organizations/usage_report/messages", headers=ANTHROPIC,
                               params=params)
    assert status == 200
    [bucket] = usage["data"]
    assert (bucket["starting_at"], bucket["ending_at"]) == ("2026-11-02T00:00:00Z", "2026-11-03T00:00:00Z")
    assert bucket["results"] == [{"uncached_input_tokens": 7, "cache_read_input_tokens": 3, "output_tokens": 2,
                                  "cache_creation": {"ephemeral_1h_input_tokens": 0, "ephemeral_5m_input_tokens": 1},
                                  "server_tool_use": {"web_search_requests": 0}, "api_key_id": None,
                                  "workspace_id": None, "model": "claude-x", "service_tier": None,
                                  "context_window": None}]
    status, cost = await call("GET", f"{base_url}/v1/organizations/cost_report", headers=ANTHROPIC,
                              params=[*params[:2], ("group_by[]", "description")])
    assert status == 200
    [line] = cost["data"][0]["results"]
    assert (line["amount"], line["currency"], line["model"], line["workspace_id"]) == ("12.75", "USD", "claude-x",
                                                                                         None)
    status, error = await call("GET", f"{base_url}/v1/organizations/cost_report", headers=ANTHROPIC,
                               params=[*params[:2], ("bucket_width", "1h")])
    assert status == 400
    assert error["type"] == "error"
    status, error = await call("GET", f"{base_url}/v1/organizations/cost_report",
                               headers={**ANTHROPIC, "x-api-key": "sk-ant-api03-inference"}, params=params[:2])
    assert (status, error["error"]["type"]) == (401, "authentication_error")

"""Broken upstream answers: the client still gets exactly the bytes the upstream sent, the event is flagged.

Nothing may crash, and no usage may be invented from garbage.
"""

from __future__ import annotations

import http.client
import json

import pytest

from tests.support.stack import key_for, wait_for_row

pytestmark = pytest.mark.integration
ROW_SQL = ("SELECT status, usage_source, input_tokens, output_tokens FROM usage_events FINAL "
           "WHERE tags['case'] = {case:String}")


def fetch(port: int, path: str, body: dict, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json", **(headers or {})})
    resp = conn.getresponse()
    try:
        data = resp.read()
    except http.client.IncompleteRead as exc:  # a cut stream: keep what arrived
        data = exc.partial
    conn.close()
    return resp.status, data


@pytest.mark.parametrize(("path", "model"), [("/v1/chat/completions", "gpt-4o-mini"), ("/v1/messages",
                                                                                      "claude-sonnet-4-6")])
@pytest.mark.parametrize("mode", [1, 2, 3, 4, 5], ids=["cut-json", "bad-utf8", "negative", "no-usage", "absurd"])
def test_malformed_whole_answer(stack, path: str, model: str, mode: int) -> None:
    case = f"malformed-{path.rsplit('/', 1)[1]}-{mode}"
    body = {"model": model, "max_tokens": 100,
            "messages": [{"role": "user", "content": f"fake: prompt=50 completion=20 frozen=1 malformed={mode}"}]}
    direct_status, direct = fetch(stack.fake_upstream_port, path, body)
    headers = {"Authorization": f"Bearer {key_for(stack, 'search', 'ranking')}", "X-Aimeter-Tags": f"case={case}"}
    status, via = fetch(stack.settings.gateway_port, path, body, headers)
    assert (status, via) == (direct_status, direct)  # the client gets the upstream's bytes, unmodified
    row = wait_for_row(stack_client(stack), ROW_SQL, {"case": case})[0]
    assert row[0] == "ok"
    assert row[1:] == ("none", 0, 0), "garbage must be flagged, never turned into usage"


def test_stream_cut_mid_way_is_flagged_broken(stack) -> None:
    body = {"model": "gpt-4o-mini", "stream": True,
            "messages": [{"role": "user", "content": "fake: prompt=50 completion=20 chunks=10 drop=3"}]}
    headers = {"Authorization": f"Bearer {key_for(stack, 'search', 'ranking')}", "X-Aimeter-Tags": "case=cut-stream"}
    status, data = fetch(stack.settings.gateway_port, "/v1/chat/completions", body, headers)
    assert status == 200
    assert data.count(b"data: ") >= 3
    row = wait_for_row(stack_client(stack), ROW_SQL, {"case": "cut-stream"})[0]
    assert row[0] == "broken_stream"
    assert row[1] == "estimated"  # what was streamed before the cut is still billed


def stack_client(stack):
    from aimeter.store.client import query_endpoint_client  # noqa: PLC0415

    return query_endpoint_client(stack.settings.resolved_clickhouse_url, stack.settings.query_port)

"""External load generators: wrk (C, closed loop) for saturation, vegeta (Go, open loop) for fixed rates.

Both are found on PATH or in benchmarks/.tools/bin (where run.sh installs vegeta); when one is
missing the harness falls back to its own asyncio client (httpload.py) and records which one ran.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from benchmarks.procs import AUX_CORE

TOOLS_BIN = Path(__file__).resolve().parent / ".tools" / "bin"

# wrk calls done() once with the merged statistics; we print them as one JSON line.
_WRK_LUA = """wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nWRK_JSON {{"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, '
    .. '"status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass(frozen=True)
class LoadResult:
    """What a load run measured; latencies in ms, ``ok`` counts 2xx answers only."""

    tool: str
    seconds: float
    sent: int
    ok: int
    errors: int
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


def find(tool: str) -> str | None:
    local = TOOLS_BIN / tool
    return str(local) if local.is_file() else shutil.which(tool)


def _lua_string(text: str) -> str:
    return "[==[" + text + "]==]"


def wrk(url: str, body: bytes, headers: dict[str, str], *, connections: int, seconds: float,
        script_dir: Path) -> LoadResult:
    """Saturation: ``connections`` keep-alive connections, one wrk thread, pinned to the aux core."""
    binary = find("wrk")
    assert binary is not None
    script = script_dir / "wrk_post.lua"
    header_lines = "\n".join(f'wrk.headers["{k}"] = {_lua_string(v)}' for k, v in headers.items())
    script.write_text(_WRK_LUA.format(body=_lua_string(body.decode()), headers=header_lines), encoding="utf-8")
    argv = ["taskset", "-c", str(AUX_CORE), binary, "-t1", f"-c{connections}", f"-d{seconds:g}s",
            "--timeout", "10s", "-s", str(script), url]
    out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=seconds + 60)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary (exit {out.returncode}): {out.stdout[-800:]} {out.stderr[-800:]}")
    data = json.loads(line.removeprefix("WRK_JSON "))
    errors = data["connect"] + data["read"] + data["write"] + data["status"] + data["timeout"]
    return LoadResult("wrk", data["duration_us"] / 1e6, data["requests"], data["requests"] - data["status"],
                      errors, data["p50_us"] / 1000, data["p99_us"] / 1000)


def vegeta(url: str, body: bytes, headers: dict[str, str], *, rate: int, seconds: float,
           script_dir: Path) -> LoadResult:
    """Constant ``rate`` requests/s, open loop (vegeta adds workers rather than slow down)."""
    binary = find("vegeta")
    assert binary is not None
    body_path = script_dir / "vegeta_body.json"
    body_path.write_bytes(body)
    target = script_dir / "vegeta_targets.txt"
    target.write_text("\n".join([f"POST {url}", "Content-Type: application/json",
                                 *(f"{k}: {v}" for k, v in headers.items()), f"@{body_path}", ""]),
                      encoding="utf-8")
    attack = ["taskset", "-c", str(AUX_CORE), binary, "attack", f"-rate={rate}/s", f"-duration={seconds:g}s",
              f"-targets={target}", "-timeout=30s", "-keepalive=true"]
    report = [binary, "report", "-type=json"]
    with subprocess.Popen(attack, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as producer:
        out = subprocess.run(report, stdin=producer.stdout, capture_output=True, text=True,
                             check=False, timeout=seconds + 90)
    data = json.loads(out.stdout)
    codes = data.get("status_codes") or {}
    ok = sum(n for code, n in codes.items() if code.startswith("2"))
    lat = data["latencies"]
    return LoadResult("vegeta", data["duration"] / 1e9 or seconds, data["requests"], ok, data["requests"] - ok,
                      lat["50th"] / 1e6, lat["99th"] / 1e6)

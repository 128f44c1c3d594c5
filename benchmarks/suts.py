"""The systems under test, all in front of the same fake upstream: direct, nginx, our gateway, LiteLLM.

Each one is started here, pinned to the SUT core, with the configuration a careful operator
would use: nginx with upstream keep-alive and no buffering for streams, the gateway with
gateway-issued keys, real Kafka and the pricer running, LiteLLM with a master key and no database.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from aimeter.local.kafka import free_port
from benchmarks.procs import AUX_CORE, SUT_CORE, Proc, Procs, wait_http

BENCH_DIR = Path(__file__).resolve().parent
LITELLM_VENV = BENCH_DIR / ".litellm-venv"
LITELLM_MASTER_KEY = "sk-aimeter-bench-master"  # loopback-only benchmark credential, not a secret
MODEL = "gpt-4o-mini"
CHAT_PATH = "/v1/chat/completions"

GATEWAY_CONFIG = """# written by benchmarks/suts.py for one benchmark run
backends:
  openai:
    kind: openai
    base_url: http://127.0.0.1:{port}/v1
    deployment: proprietary
    provider: openai
models:
  {model}: {{backend: openai}}
"""

NGINX_CONF = """# written by benchmarks/suts.py for one benchmark run
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_body_temp_path {root}/tmp_body;
  proxy_temp_path {root}/tmp_proxy;
  fastcgi_temp_path {root}/tmp_fastcgi;
  uwsgi_temp_path {root}/tmp_uwsgi;
  scgi_temp_path {root}/tmp_scgi;
  upstream fake {{ server 127.0.0.1:{upstream}; keepalive 512; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://fake;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
}}
"""

LITELLM_CONFIG = """# written by benchmarks/suts.py for one benchmark run
model_list:
  - model_name: {model}
    litellm_params:
      model: openai/{model}
      api_base: http://127.0.0.1:{upstream}/v1
      api_key: sk-fake-upstream
general_settings:
  master_key: {master}
litellm_settings:
  set_verbose: false
  telemetry: false
"""


@dataclass
class Target:
    """Where to send load, with which headers, and which processes to account CPU and RSS to."""

    name: str
    url: str
    headers: dict[str, str]
    proc: Proc | None = None
    extra_pids: list[int] = field(default_factory=list)

    def pids(self) -> list[int]:
        return [*(self.proc.pids() if self.proc else []), *self.extra_pids]


def aimeter_env(work: Path, bootstrap: str, config: Path, **settings: str) -> dict[str, str]:
    """The environment every aimeter child of a run gets: one data dir, one Kafka, one config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIMETER_")}
    env.update({"AIMETER_DATA_DIR": str(work), "AIMETER_KAFKA_BOOTSTRAP": bootstrap,
                "AIMETER_CONFIG": str(config), **{f"AIMETER_{k.upper()}": v for k, v in settings.items()}})
    return env


def emitted_events(target: Target, data_dir: Path) -> int:
    """The gateway's count of usage events handed to Kafka, from its /metrics (the bearer token, once there is one,
    is in the run's data dir; older versions served /metrics without one and ignore the header)."""
    token_file = data_dir / "metrics_token"
    headers = {"Authorization": f"Bearer {token_file.read_text().strip()}"} if token_file.exists() else {}
    request = urllib.request.Request(target.url.split("/v1/")[0] + "/metrics", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("aimeter_events_emitted_total "):
                return int(float(line.split()[-1]))
    return -1


def start_upstream(procs: Procs) -> tuple[Proc, int]:
    """The project's fake upstream; per-request latency comes from the body's `fake:` directive."""
    port = free_port()
    proc = procs.spawn("fake-upstream", [sys.executable, "-m", "aimeter", "fake-upstream", "--port", str(port)],
                       AUX_CORE)
    wait_http(proc, f"http://127.0.0.1:{port}/health")
    return proc, port


def direct(upstream: Proc, port: int) -> Target:
    return Target("direct", f"http://127.0.0.1:{port}{CHAT_PATH}", {}, upstream)


def write_gateway_config(work: Path, upstream_port: int) -> Path:
    path = work / "gateway.yaml"
    path.write_text(GATEWAY_CONFIG.format(port=upstream_port, model=MODEL), encoding="utf-8")
    return path


def create_key(env: dict[str, str], team: str) -> str:
    """A gateway-issued key, made the way an operator makes one: `aimeter keys create`."""
    out = subprocess.run([sys.executable, "-m", "aimeter", "keys", "create", "--team", team],
                         env=env, capture_output=True, text=True, check=True, timeout=60)
    return out.stdout.splitlines()[0].strip()


def start_gateway(procs: Procs, env: dict[str, str], key: str) -> Target:
    """Our gateway with metering on (Kafka producer, pricer consuming) and keys required."""
    port = free_port()
    proc = procs.spawn("gateway", [sys.executable, "-m", "aimeter", "gateway"], SUT_CORE,
                       env={**env, "AIMETER_GATEWAY_PORT": str(port), "AIMETER_AUTH": "keys"})
    wait_http(proc, f"http://127.0.0.1:{port}/health")
    return Target("gateway", f"http://127.0.0.1:{port}{CHAT_PATH}", {"Authorization": f"Bearer {key}"}, proc)


def nginx_binary() -> str | None:
    for candidate in ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"):
        if Path(candidate).is_file():
            return candidate
    return None


def start_nginx(procs: Procs, work: Path, upstream_port: int) -> Target | None:
    """One nginx worker (plus its master), the practical ceiling for a proxy on one core."""
    binary = nginx_binary()
    if binary is None:
        return None
    root = work / "nginx"
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = root / "nginx.conf"
    conf.write_text(NGINX_CONF.format(root=root, upstream=upstream_port, port=port), encoding="utf-8")
    proc = procs.spawn("nginx", [binary, "-c", str(conf), "-p", str(root), "-g", "daemon off;"], SUT_CORE)
    wait_http(proc, f"http://127.0.0.1:{port}/health")
    return Target("nginx", f"http://127.0.0.1:{port}{CHAT_PATH}", {}, proc)


def litellm_binary() -> Path | None:
    binary = LITELLM_VENV / "bin" / "litellm"
    return binary if binary.is_file() else None


def start_litellm(procs: Procs, work: Path, upstream_port: int) -> Target | None:
    """LiteLLM's proxy, one worker, no database, its master key required; telemetry and cost-map fetch off."""
    binary = litellm_binary()
    if binary is None:
        return None
    conf = work / "litellm.yaml"
    conf.write_text(LITELLM_CONFIG.format(model=MODEL, upstream=upstream_port, master=LITELLM_MASTER_KEY),
                    encoding="utf-8")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "PYTHONPATH"}}
    env.update({"LITELLM_LOG": "ERROR", "LITELLM_LOCAL_MODEL_COST_MAP": "True", "NO_DOCS": "True"})
    proc = procs.spawn("litellm", [str(binary), "--config", str(conf), "--host", "127.0.0.1", "--port", str(port),
                                   "--num_workers", "1"], SUT_CORE, env=env, cwd=work)
    headers = {"Authorization": f"Bearer {LITELLM_MASTER_KEY}"}
    wait_http(proc, f"http://127.0.0.1:{port}/health/liveliness", timeout=180)
    return Target("litellm", f"http://127.0.0.1:{port}{CHAT_PATH}", headers, proc)

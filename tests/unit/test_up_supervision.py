"""`aimeter up`'s supervision and port checks, with short-lived real processes (no Kafka, no pricer)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from aimeter.local.kafka import free_port
from aimeter.local.stack import Stack
from aimeter.settings import Settings


def _stack(tmp_path: Path) -> Stack:
    settings = Settings(data_dir=tmp_path, kafka_bootstrap="127.0.0.1:1", gateway_port=free_port(),
                        query_port=free_port())
    return Stack(settings, tmp_path / "config.yaml")


def test_an_exited_part_is_restarted_with_backoff_and_reported(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    stack._spawn("helper", ["--help"])  # a part that exits at once, every time
    stack.child("helper").proc.wait(timeout=30)
    try:
        changes = stack.supervise()
        assert len(changes) == 1
        assert "helper exited with code 0" in changes[0]
        assert "restarting it in 1 s" in changes[0]
        assert "helper down (exit 0)" in stack.status()
        time.sleep(1.1)
        assert stack.supervise() == [f"helper restarted (pid {stack.child('helper').proc.pid}, restart 1)"]
        assert stack.status() == "status: helper up"
        stack.child("helper").proc.wait(timeout=30)
        assert "restarting it in 2 s" in stack.supervise()[0], "a part that keeps exiting backs off"
    finally:
        stack.stop()


def test_up_refuses_a_port_in_use_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {"AIMETER_DATA_DIR": str(tmp_path), "AIMETER_GATEWAY_PORT": str(free_port()),
               "AIMETER_QUERY_PORT": str(free_port()), "PATH": "/usr/bin:/bin"}
        out = subprocess.run([sys.executable, "-m", "aimeter", "up", "--demo", "--seconds", "1", "--upstream-port",
                              str(port)], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 1
    assert f"port {port} on 127.0.0.1 for the demo fake upstream" in out.stdout
    assert "Traceback" not in out.stdout + out.stderr
    assert (tmp_path / "demo.yaml").read_text().count(f"127.0.0.1:{port}") == 3  # its three backends

"""docker-compose.yml, checked without a Docker engine: the Compose Specification's JSON Schema
(vendored in tests/fixtures/compose_spec/, see its NOTICE.md) plus the rules the stack relies on."""

from __future__ import annotations

import copy
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from aimeter.cli import build_parser
from aimeter.grafana.model import PLUGIN_ID, PLUGIN_VERSION

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
SCHEMA = json.loads((ROOT / "tests" / "fixtures" / "compose_spec" / "compose-spec.json").read_text(encoding="utf-8"))
SERVICES = COMPOSE["services"]
APP_SERVICES = [name for name, s in SERVICES.items() if s.get("image", "").startswith("aimeter:")]
PINNED = re.compile(r"^[\w./-]+:\d+(\.\d+)+[\w.-]*$")  # name:1.2.3[-suffix], never latest or a bare major


def errors(document: dict) -> list[str]:
    validator = jsonschema.Draft7Validator(SCHEMA, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(document)]


def test_the_file_follows_the_compose_specification():
    assert errors(COMPOSE) == []


def test_the_schema_check_catches_mistakes():
    broken = copy.deepcopy(COMPOSE)
    broken["services"]["gateway"]["depends_on"]["kafka"]["condition"] = "service_ready"
    broken["services"]["pricer"]["helthcheck"] = {}
    assert len(errors(broken)) == 2


def test_the_whole_stack_is_there():
    images = {name: s["image"].split(":")[0] for name, s in SERVICES.items()}
    assert images["kafka"] == "apache/kafka"
    assert images["clickhouse"] == "clickhouse/clickhouse-server"
    assert images["grafana"] == "grafana/grafana"
    assert set(APP_SERVICES) == {"gateway", "pricer", "fake-upstream", "demo"}
    assert SERVICES["demo"]["profiles"] == ["demo"]
    assert "KAFKA_PROCESS_ROLES" in SERVICES["kafka"]["environment"]  # KRaft, no ZooKeeper


@pytest.mark.parametrize("name", SERVICES)
def test_every_service_has_a_healthcheck(name):
    check = SERVICES[name]["healthcheck"]
    assert check["test"][0] in {"CMD", "CMD-SHELL"}
    assert not check.get("disable")


@pytest.mark.parametrize("name", SERVICES)
def test_images_are_pinned(name):
    assert PINNED.match(SERVICES[name]["image"]), SERVICES[name]["image"]


def test_the_dockerfile_base_image_is_pinned():
    base = re.search(r"^FROM (\S+)", (ROOT / "Dockerfile").read_text(encoding="utf-8"), re.MULTILINE)
    assert base
    assert PINNED.match(base.group(1))


@pytest.mark.parametrize("name", SERVICES)
def test_start_order_waits_for_conditions(name):
    for dependency, rule in SERVICES[name].get("depends_on", {}).items():
        assert dependency in SERVICES
        assert rule["condition"] in {"service_healthy", "service_started"}
        if dependency in {"kafka", "clickhouse", "pricer", "gateway"} and "network_mode" not in SERVICES[name]:
            assert rule["condition"] == "service_healthy", f"{name} must wait for {dependency} to be healthy"


def test_pricer_uses_the_clickhouse_server_and_apps_use_kafka():
    assert SERVICES["pricer"]["environment"]["AIMETER_CLICKHOUSE_URL"].startswith("http://")
    assert "@clickhouse:8123/" in SERVICES["pricer"]["environment"]["AIMETER_CLICKHOUSE_URL"]
    for name in APP_SERVICES:
        assert SERVICES[name].get("environment", {}).get("AIMETER_KAFKA_BOOTSTRAP", "kafka:9092") == "kafka:9092"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_run_real_aimeter_commands(name):
    """The same commands as local mode: each parses with the CLI's own parser."""
    command = SERVICES[name]["command"]
    command = shlex.split(command) if isinstance(command, str) else command
    assert command[0] == "aimeter"
    args = build_parser().parse_args(command[1:])
    assert callable(args.func)


def test_the_config_the_apps_read_is_in_the_image():
    config = SERVICES["gateway"]["environment"]["AIMETER_CONFIG"]
    assert config.startswith("/app/")
    assert (ROOT / config.removeprefix("/app/")).is_file()
    assert "COPY examples" in (ROOT / "Dockerfile").read_text(encoding="utf-8")


def test_grafana_gets_the_plugin_and_our_provisioning():
    grafana = SERVICES["grafana"]
    assert grafana["environment"]["GF_PLUGINS_PREINSTALL_SYNC"] == f"{PLUGIN_ID}@{PLUGIN_VERSION}"
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in grafana["volumes"] if v.startswith("./"))
    for host in mounts:
        assert (ROOT / host).is_dir(), host
    provider = yaml.safe_load((ROOT / "dashboards/provisioning/dashboards/aimeter.yaml").read_text())["providers"][0]
    assert mounts["./dashboards/json"] == provider["options"]["path"]
    datasource = (ROOT / "dashboards/provisioning/datasources/clickhouse.yaml").read_text(encoding="utf-8")
    for variable in set(re.findall(r"\$\{(\w+)\}", datasource)):
        assert variable in grafana["environment"], f"the datasource file needs {variable}"


def test_the_demo_profile_command_issues_keys_and_reports_failed_traffic(tmp_path):
    """`aimeter demo` (the demo service) writes one key per team to the shared key file, then drives the gateway;
    with no gateway there, every request fails and the command says so with its exit code."""
    keys = tmp_path / "keys.json"
    env = {"PATH": "/usr/bin:/bin", "AIMETER_KEYS_FILE": str(keys), "AIMETER_DATA_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "aimeter", "demo", "--gateway-url", "http://127.0.0.1:9",
                          "--seconds", "0.3", "--concurrency", "1"], capture_output=True, text=True, env=env,
                         timeout=60, check=False)
    assert out.returncode == 1, out.stderr
    assert "errors" in out.stdout
    assert all(team in keys.read_text(encoding="utf-8") for team in ("search", "support", "research", "platform"))

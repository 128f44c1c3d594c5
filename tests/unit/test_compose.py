"""docker-compose.yml, checked without a Docker engine: the Compose Specification's JSON Schema
(vendored in tests/fixtures/compose_spec/, see its NOTICE.md) plus the rules the stack relies on: published
ports on loopback, no default passwords, a read-only ClickHouse user for Grafana and a writer for the pricer,
durable volumes and restart policies; and that the app services run what local mode runs (keys in Kafka,
alerts, budgets reading the ledger), each with settings that exist."""

from __future__ import annotations

import copy
import inspect
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from pathlib import Path

import jsonschema
import pytest
import yaml

from aimeter.alerts.app import run_alerter
from aimeter.cli import build_parser
from aimeter.gateway.keys_kafka import KeysTopic
from aimeter.gateway.server import Server
from aimeter.grafana.model import PLUGIN_ID, PLUGIN_VERSION
from aimeter.local.demo import TEAMS
from aimeter.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
SCHEMA = json.loads((ROOT / "tests" / "fixtures" / "compose_spec" / "compose-spec.json").read_text(encoding="utf-8"))
SERVICES = COMPOSE["services"]
APP_SERVICES = [name for name, s in SERVICES.items() if s.get("image", "").startswith("aimeter:")]
PINNED = re.compile(r"^[\w./-]+:\d+(\.\d+){2,}[\w.-]*(@sha256:[0-9a-f]{64})?$")  # name:1.2.3[-x][@digest]
USERS_XML = ROOT / "docker" / "clickhouse" / "users.d" / "aimeter.xml"
DEMO_ENV = ROOT / "examples" / "compose-demo.env"
READER, WRITER = "aimeter_reader", "aimeter_writer"  # the embedded query endpoint's reader has the same name
_INTERPOLATION = re.compile(r"\$\$|\$\{(\w+)(?:(:?[-?])([^}]*))?\}|\$(\w+)")


class MissingVariableError(ValueError):
    """What `docker compose` prints and stops on: a `${VAR:?message}` whose variable is unset or empty."""


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's interpolation of one value: ``$$``, ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}``."""
    def one(m: re.Match[str]) -> str:
        if m.group() == "$$":
            return "$"
        name, op, arg = m.group(1) or m.group(4), m.group(2), m.group(3)
        value = env.get(name)
        unset = value is None or (value == "" and op is not None and op.startswith(":"))
        if op and op.endswith("-") and unset:
            return arg
        if op and op.endswith("?") and unset:
            raise MissingVariableError(f"required variable {name} is missing a value: {arg}")
        return value or ""

    return _INTERPOLATION.sub(one, text)


def interpolated(document: object, env: Mapping[str, str]) -> object:
    if isinstance(document, dict):
        return {k: interpolated(v, env) for k, v in document.items()}
    if isinstance(document, list):
        return [interpolated(v, env) for v in document]
    return interpolate(document, env) if isinstance(document, str) else document


def demo_env() -> dict[str, str]:
    lines = DEMO_ENV.read_text(encoding="utf-8").splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


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
    assert set(APP_SERVICES) == {"gateway", "pricer", "fake-upstream", "demo", "alerts"}
    assert SERVICES["demo"]["profiles"] == ["demo"]
    assert SERVICES["alerts"]["profiles"] == ["alerts"]
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
        if dependency in {"kafka", "clickhouse", "pricer", "gateway", "fake-upstream"}:
            assert rule["condition"] == "service_healthy", f"{name} must wait for {dependency} to be healthy"


def test_pricer_uses_the_clickhouse_server_and_apps_use_kafka():
    env = SERVICES["pricer"]["environment"]
    assert env["AIMETER_CLICKHOUSE_URL"] == "http://clickhouse:8123/default"  # no credentials in the URL
    assert env["AIMETER_CLICKHOUSE_USER"] == WRITER
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


def test_the_gateway_id_survives_a_recreated_container():
    """The default id holds the hostname, a container's id: a recreated gateway would not replay its journal."""
    assert SERVICES["gateway"]["environment"]["AIMETER_GATEWAY_ID"]


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


def test_the_demo_command_with_the_file_store_issues_keys_and_reports_failed_traffic(tmp_path):
    """`aimeter demo` with AIMETER_KEYS_STORE=file writes one key per team to the key file, then drives the
    gateway; with no gateway there, every request fails and the command says so with its exit code. (The demo
    service itself uses the keys topic: test_the_demo_service_gets_its_keys_through_kafka_without_a_key_file.)"""
    keys = tmp_path / "keys.json"
    env = {"PATH": "/usr/bin:/bin", "AIMETER_KEYS_FILE": str(keys), "AIMETER_DATA_DIR": str(tmp_path),
           "AIMETER_KEYS_STORE": "file"}
    # 2 s, not less: on a loaded box the SDK clients took over 0.3 s to build and no request was sent at all.
    out = subprocess.run([sys.executable, "-m", "aimeter", "demo", "--gateway-url", "http://127.0.0.1:9",
                          "--seconds", "2", "--concurrency", "1"], capture_output=True, text=True, env=env,
                         timeout=60, check=False)
    assert out.returncode == 1, out.stderr
    assert "errors" in out.stdout
    assert all(team in keys.read_text(encoding="utf-8") for team in ("search", "support", "research", "platform"))


# --- the app services run what local mode runs ----------------------------------------------------------------

def image_env() -> dict[str, str]:
    """The AIMETER_ variables the Dockerfile's ENV sets for every app service (e.g. the data dir)."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    block = re.search(r"^ENV (.+)$", text, re.MULTILINE)
    assert block
    pairs = dict(pair.split("=", 1) for pair in shlex.split(block.group(1)))
    return {k: v for k, v in pairs.items() if k.startswith("AIMETER_")}


def service_env(name: str) -> dict[str, str]:
    """What a container of ``name`` sees, with the demo passwords: the image's ENV, then the service's environment.
    A variable listed without a value is passed through from the shell or .env by Compose; unset there, the
    container does not have it (so it is left out here)."""
    environment = interpolated(SERVICES[name].get("environment", {}), demo_env())
    assert isinstance(environment, dict)
    return {**image_env(), **{k: str(v) for k, v in environment.items() if v is not None}}


def settings_of(name: str, monkeypatch: pytest.MonkeyPatch, **extra: str) -> Settings:
    """The settings the service's process would load from exactly its container's AIMETER_ variables."""
    for variable in [v for v in os.environ if v.startswith("AIMETER_")]:
        monkeypatch.delenv(variable)
    for variable, value in {**service_env(name), **extra}.items():
        monkeypatch.setenv(variable, value)
    return load_settings()


@pytest.mark.parametrize("name", APP_SERVICES)
def test_every_aimeter_variable_a_service_sets_is_a_setting_and_loads(name, monkeypatch):
    """A misspelt or removed setting would be ignored silently (extra="ignore"): each name must be a field."""
    fields = {f"AIMETER_{field.upper()}" for field in Settings.model_fields}
    unknown = {v for v in [*service_env(name), *SERVICES[name].get("environment", {})]
               if v.startswith("AIMETER_") and v not in fields}
    assert not unknown, f"{name} sets variables no setting reads: {sorted(unknown)}"
    settings_of(name, monkeypatch)  # and the values validate (SettingsError otherwise)


@pytest.mark.parametrize("name", [n for n in APP_SERVICES if n != "fake-upstream"])  # it has no settings
def test_gateway_keys_live_in_kafka_as_in_local_mode(name, monkeypatch):
    """Keys, their budgets and rate limits are in the topic ai.keys.v1, which every service and `docker compose
    exec … aimeter keys` reach on kafka:9092: no service falls back to a key file (a volume shared between
    containers, which the old stack mounted and nothing wrote once keys moved to Kafka)."""
    settings = settings_of(name, monkeypatch)
    assert settings.keys_store == "kafka"
    assert settings.kafka_bootstrap == "kafka:9092"
    assert "AIMETER_KEYS_FILE" not in service_env(name)
    assert "AIMETER_KEYS_STORE" not in service_env(name)


@pytest.mark.parametrize("name", APP_SERVICES)
def test_an_app_service_mounts_only_volumes_it_writes(name, monkeypatch):
    """Each named volume of an app service is a directory its settings write (the data dir, the spool; a key
    file's directory only with the file store): a volume nothing writes misleads whoever backs it up."""
    settings = settings_of(name, monkeypatch)
    written = {settings.data_dir, settings.resolved_spool_dir}
    if settings.keys_store == "file":
        written.add(settings.resolved_keys_file.parent)
    for target in named_volumes(SERVICES[name]):
        assert any(Path(target) == d or Path(target) in d.parents for d in written), \
            f"{name} mounts a volume at {target}, where none of its settings write ({sorted(map(str, written))})"


def test_services_that_read_the_ledger_reach_the_clickhouse_server(monkeypatch):
    """The gateway's budgets read the period's spend from the ledger, as the read-only user; the alerts read it
    and write the budget windows, as the writer. Without a URL both would look for local mode's embedded query
    endpoint on 127.0.0.1, which no container runs."""
    users = {"gateway": READER, "alerts": WRITER, "pricer": WRITER}
    passwords = {READER: "AIMETER_CLICKHOUSE_READER_PASSWORD", WRITER: "AIMETER_CLICKHOUSE_WRITER_PASSWORD"}
    for name, user in users.items():
        settings = settings_of(name, monkeypatch)
        assert settings.resolved_clickhouse_url.startswith(f"http://{user}:"), name
        assert settings.resolved_clickhouse_url.endswith("@clickhouse:8123/default"), name
        assert service_env(name)["AIMETER_CLICKHOUSE_PASSWORD"] == demo_env()[passwords[user]]
    # Started after the pricer, as `aimeter up` does: the ledger's tables exist once the pricer is healthy.
    for name in ("gateway", "alerts"):
        assert SERVICES[name]["depends_on"]["pricer"]["condition"] == "service_healthy"


def test_the_alerts_service_runs_aimeter_alerts_with_the_webhook_passed_through(tmp_path, monkeypatch):
    """`aimeter up` starts the alerts when AIMETER_ALERTS_WEBHOOK_URL is set; here the `alerts` profile does.
    The URL is passed through (no value in the file): a `${…:?}` check would stop every `docker compose up`,
    since Compose interpolates the services of every profile. Unset, the command says so and exits 2."""
    alerts = SERVICES["alerts"]
    assert alerts["command"] == ["aimeter", "alerts"]
    assert alerts["environment"]["AIMETER_ALERTS_WEBHOOK_URL"] is None
    assert "AIMETER_ALERTS_WEBHOOK_URL" not in service_env("alerts")
    check = " ".join(alerts["healthcheck"]["test"])
    assert "s.alerts_group" in check
    assert "s.kafka_bootstrap" in check
    settings = settings_of("alerts", monkeypatch, AIMETER_ALERTS_WEBHOOK_URL="https://hooks.example.com/x")
    assert settings.alerts_webhook_url == "https://hooks.example.com/x"
    env = {"PATH": "/usr/bin:/bin", **service_env("alerts"), "AIMETER_DATA_DIR": str(tmp_path / "data"),
           "AIMETER_CONFIG": str(ROOT / service_env("alerts")["AIMETER_CONFIG"].removeprefix("/app/"))}
    out = subprocess.run([sys.executable, "-m", "aimeter", *alerts["command"][1:]], capture_output=True, text=True,
                         env=env, timeout=60, check=False)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "AIMETER_ALERTS_WEBHOOK_URL is not set" in out.stdout


def test_the_demo_service_gets_its_keys_through_kafka_without_a_key_file(kafka_bootstrap, tmp_path):
    """The demo service's own environment (Kafka's address aside): `aimeter demo` issues one key per team in the
    keys topic, and revokes them when its traffic is done; nothing is written under its data dir."""
    data_dir = tmp_path / "never-written"
    env = {"PATH": "/usr/bin:/bin", **service_env("demo"), "AIMETER_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "AIMETER_DATA_DIR": str(data_dir)}
    command = SERVICES["demo"]["command"]
    args = [*command[1:command.index("--gateway-url") + 1], "http://127.0.0.1:9", "--seconds", "1",
            "--concurrency", "1"]
    before = set(KeysTopic(kafka_bootstrap).load())
    out = subprocess.run([sys.executable, "-m", "aimeter", *args], capture_output=True, text=True, env=env,
                         timeout=120, check=False)
    assert out.returncode == 1, out.stdout + out.stderr  # no gateway there: the traffic failed, and it says so
    assert f"revoked the {len(TEAMS)} gateway keys" in out.stdout
    made = [r for key_id, r in KeysTopic(kafka_bootstrap).load().items() if key_id not in before]
    assert sorted(r.team for r in made) == sorted(TEAMS)
    assert all(not r.active for r in made)
    assert not data_dir.exists()


def test_a_key_created_in_the_gateway_container_is_accepted_by_its_gateway(kafka_bootstrap, tmp_path):
    """`docker compose exec gateway aimeter keys create …`, run with the gateway service's own environment (Kafka's
    address, the data dir and a loopback port aside): the gateway started with that environment accepts the key
    from the topic, and refuses it once `aimeter keys revoke` ran the same way. It starts although the ClickHouse
    server its budgets would read is not there."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {"PATH": "/usr/bin:/bin", **service_env("gateway"), "AIMETER_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "AIMETER_DATA_DIR": str(tmp_path), "AIMETER_GATEWAY_HOST": "127.0.0.1", "AIMETER_GATEWAY_PORT": str(port),
           "AIMETER_CONFIG": str(ROOT / service_env("gateway")["AIMETER_CONFIG"].removeprefix("/app/"))}
    url = f"http://127.0.0.1:{port}"
    with (tmp_path / "gateway.log").open("wb") as log:
        gateway = subprocess.Popen([sys.executable, "-m", "aimeter", *SERVICES["gateway"]["command"][1:]],
                                   stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        # Up to the budgets' 15 s ledger wait if an earlier test left a key budget in the session's topic.
        answered = until(lambda: http_status(f"{url}/health") == 200, 90, gateway)
        assert answered, (tmp_path / "gateway.log").read_text(encoding="utf-8", errors="replace")[-3000:]
        out = subprocess.run([sys.executable, "-m", "aimeter", "keys", "create", "--team", "search"],
                             capture_output=True, text=True, env=env, timeout=60, check=True)
        key = out.stdout.splitlines()[0]
        assert until(lambda: http_status(f"{url}/v1/models", key) == 200, 15, gateway), http_status(
            f"{url}/v1/models", key)
        key_id = key.split("_")[1]  # am_<id>_<secret>
        subprocess.run([sys.executable, "-m", "aimeter", "keys", "revoke", key_id], capture_output=True, env=env,
                       timeout=60, check=True)  # and the session's topic keeps no active key of this test
        assert until(lambda: http_status(f"{url}/v1/models", key) == 401, 15, gateway)
    finally:
        gateway.terminate()
        gateway.wait(30)


def http_status(url: str, key: str = "") -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def until(check: Callable[[], bool], timeout: float, process: subprocess.Popen[bytes]) -> bool:
    """Polls ``check`` until it holds (True) or ``timeout`` passes or ``process`` exits (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if check():
            return True
        time.sleep(0.1)
    return False


def seconds(duration: str) -> float:
    """A Compose duration such as ``45s``, ``1m30s`` or ``500ms``."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def test_a_stop_leaves_each_part_the_time_its_own_graceful_stop_takes():
    """Docker sends SIGKILL 10 s after SIGTERM unless told otherwise; `aimeter up` waits 60 s. The gateway drains
    requests in flight for its server's graceful window and then flushes its publisher; the alerts give the alert
    being posted its grace to be recorded; the pricer finishes its batch's insert and commit."""
    gateway = inspect.signature(Server.__init__).parameters["graceful_s"].default
    alerts = inspect.signature(run_alerter).parameters["grace_s"].default
    assert seconds(SERVICES["gateway"]["stop_grace_period"]) >= gateway + 10
    assert seconds(SERVICES["alerts"]["stop_grace_period"]) >= alerts + 10
    assert seconds(SERVICES["pricer"]["stop_grace_period"]) >= 30


def test_the_broker_auto_creates_topics_like_the_services_create_them():
    """A producer that reaches Kafka before the gateway's or pricer's topic creation auto-creates the topic with
    the broker's default: the same partition count as the services' (and local mode's broker, num.partitions=4)."""
    assert int(SERVICES["kafka"]["environment"]["KAFKA_NUM_PARTITIONS"]) == Settings.model_fields[
        "topic_partitions"].default


def test_the_readmes_docker_commands_parse():
    """Each `docker compose exec|run <service> aimeter …` the README gives names a service and a real command."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### The whole stack in Docker", 1)[1].split("\n### ", 1)[0]
    commands = re.findall(r"`docker compose (?:exec|run --rm) ([\w-]+) (aimeter [^`]+)`", section)
    assert len(commands) >= 3
    for service, command in commands:
        assert service in APP_SERVICES, service
        assert callable(build_parser().parse_args(shlex.split(command)[1:]).func), command

# --- security of the stack ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [n for n, s in SERVICES.items() if s.get("ports")])
def test_published_ports_bind_to_loopback_unless_told_otherwise(name):
    for port in SERVICES[name]["ports"]:
        assert port.startswith("${AIMETER_PUBLISH_ADDRESS:-127.0.0.1}:"), port
        assert interpolate(port, {}).startswith("127.0.0.1:")
        assert interpolate(port, {"AIMETER_PUBLISH_ADDRESS": "10.0.0.5"}).startswith("10.0.0.5:")
    assert not any(str(p).count(":") < 2 for p in SERVICES[name]["ports"]), "a host address must be written"


def test_no_password_has_a_default_so_the_stack_refuses_to_start_without_them():
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    uses = re.findall(r"\$\{(\w*PASSWORD\w*)([^}]*)\}", text)
    assert {name for name, _ in uses} == {"AIMETER_CLICKHOUSE_WRITER_PASSWORD", "AIMETER_CLICKHOUSE_READER_PASSWORD",
                                          "GRAFANA_ADMIN_PASSWORD"}
    assert all(rule.startswith(":?") for _, rule in uses), "a password must never fall back to a default"
    with pytest.raises(MissingVariableError, match=r"AIMETER_CLICKHOUSE_\w+_PASSWORD .*compose-demo.env"):
        interpolated(COMPOSE, {})
    with pytest.raises(MissingVariableError, match="GRAFANA_ADMIN_PASSWORD"):
        interpolated(COMPOSE, {"AIMETER_CLICKHOUSE_WRITER_PASSWORD": "w", "AIMETER_CLICKHOUSE_READER_PASSWORD": "r"})
    assert "aimeter" not in set(re.findall(r":-([^}]*)\}", text))  # the old default password is gone


def test_the_demo_passwords_come_with_the_demo_profile_only():
    env = demo_env()
    assert env["COMPOSE_PROFILES"] == "demo"  # the file that holds the public passwords also turns the demo on
    resolved = interpolated(COMPOSE, env)
    assert errors(resolved) == []
    grafana = resolved["services"]["grafana"]["environment"]
    assert grafana["CLICKHOUSE_PASSWORD"] == env["AIMETER_CLICKHOUSE_READER_PASSWORD"]
    assert resolved["services"]["pricer"]["environment"]["AIMETER_CLICKHOUSE_PASSWORD"] == \
        env["AIMETER_CLICKHOUSE_WRITER_PASSWORD"]
    assert all("not-secret" in v for k, v in env.items() if k.endswith("PASSWORD"))


def users() -> ET.Element:
    return ET.parse(USERS_XML).getroot()


def test_clickhouse_has_a_read_only_reader_and_a_separate_writer():
    clickhouse = SERVICES["clickhouse"]
    assert f"./{USERS_XML.relative_to(ROOT)}:/etc/clickhouse-server/users.d/aimeter.xml:ro" in clickhouse["volumes"]
    # Without these the image leaves `default` without a password on the network; with neither, localhost only.
    assert not {"CLICKHOUSE_USER", "CLICKHOUSE_PASSWORD", "CLICKHOUSE_DEFAULT_ACCESS_MANAGEMENT",
                "CLICKHOUSE_SKIP_USER_SETUP"} & set(clickhouse["environment"])
    root = users()
    reader, writer = root.find(f"users/{READER}"), root.find(f"users/{WRITER}")
    assert reader is not None
    assert writer is not None
    assert [q.text for q in reader.findall("grants/query")] == ["GRANT SELECT ON default.*"]
    assert [q.text for q in writer.findall("grants/query")] == ["GRANT ALL ON default.*"]
    profile = root.find(f"profiles/{reader.findtext('profile')}")
    assert profile is not None
    assert profile.findtext("readonly") in {"1", "2"}
    constraints = profile.find("constraints")
    assert constraints is not None
    assert profile.findtext("enable_analyzer") == "1"  # the dashboards' parameterized views need it on 25.8
    assert constraints.find("enable_analyzer/const") is not None
    for setting in ("max_execution_time", "max_memory_usage", "max_result_bytes"):
        assert int(profile.findtext(setting)) <= int(constraints.findtext(f"{setting}/max")), setting
    for user, variable in ((reader, "AIMETER_CLICKHOUSE_READER_PASSWORD"),
                           (writer, "AIMETER_CLICKHOUSE_WRITER_PASSWORD")):
        assert user.find("password").get("from_env") == variable
        assert variable in clickhouse["environment"]
    assert root.find("users/default") is None  # the image's own (network-less) default user is left alone


def test_grafana_reads_as_the_reader_and_the_pricer_writes_as_the_writer():
    grafana, pricer = SERVICES["grafana"]["environment"], SERVICES["pricer"]["environment"]
    clickhouse = SERVICES["clickhouse"]["environment"]
    assert grafana["CLICKHOUSE_USER"] == READER
    assert grafana["CLICKHOUSE_PASSWORD"] == clickhouse["AIMETER_CLICKHOUSE_READER_PASSWORD"]
    assert pricer["AIMETER_CLICKHOUSE_USER"] == WRITER
    assert pricer["AIMETER_CLICKHOUSE_PASSWORD"] == clickhouse["AIMETER_CLICKHOUSE_WRITER_PASSWORD"]
    assert "aimeter_reader" in " ".join(SERVICES["clickhouse"]["healthcheck"]["test"])


# --- durability, networking, healthchecks -------------------------------------------------------------------

def named_volumes(service: dict) -> dict[str, str]:
    """Container path -> named volume."""
    pairs = [v.split(":")[:2] for v in service.get("volumes", []) if not v.startswith((".", "/"))]
    return {target: source for source, target in pairs}


def test_kafka_and_clickhouse_keep_their_data_on_named_volumes():
    kafka = SERVICES["kafka"]
    log_dirs = kafka["environment"]["KAFKA_LOG_DIRS"]
    assert not log_dirs.startswith("/tmp")
    assert named_volumes(kafka)[log_dirs] == "kafka-data"
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", kafka["environment"]["CLUSTER_ID"])  # a base64 UUID, fixed
    assert named_volumes(SERVICES["clickhouse"])["/var/lib/clickhouse"] == "clickhouse-data"
    used = {v for s in SERVICES.values() for v in named_volumes(s).values()}
    assert used == set(COMPOSE["volumes"])


@pytest.mark.parametrize("name", SERVICES)
def test_long_running_services_restart_unless_stopped(name):
    expected = "no" if name == "demo" else "unless-stopped"
    assert SERVICES[name]["restart"] == expected


def test_the_fake_upstream_has_its_own_network_identity_and_the_demo_config_names_it():
    fake = SERVICES["fake-upstream"]
    assert "network_mode" not in fake
    args = build_parser().parse_args(fake["command"][1:])
    assert (args.host, args.port) == ("0.0.0.0", 8090)
    config = yaml.safe_load((ROOT / "examples" / "compose-demo.yaml").read_text(encoding="utf-8"))
    local = yaml.safe_load((ROOT / "examples" / "demo.yaml").read_text(encoding="utf-8"))
    urls = {b["base_url"] for b in config["backends"].values()}
    assert all(u.startswith(f"http://fake-upstream:{args.port}") for u in urls)
    for backend in local["backends"].values():
        backend["base_url"] = backend["base_url"].replace("127.0.0.1", "fake-upstream")
    assert config == local, "compose-demo.yaml is demo.yaml with the fake upstream reached by its service name"


def test_the_pricer_healthcheck_reads_bootstrap_and_group_from_its_settings():
    check = " ".join(SERVICES["pricer"]["healthcheck"]["test"])
    assert "kafka:9092" not in check
    assert "aimeter-pricer" not in check
    assert "load_settings()" in check
    assert "s.kafka_bootstrap" in check
    assert "s.pricer_group" in check


def test_grafanas_plugin_download_is_documented_with_the_offline_alternative():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "GF_PLUGINS_PREINSTALL_SYNC" in readme
    assert "/var/lib/grafana/plugins" in readme

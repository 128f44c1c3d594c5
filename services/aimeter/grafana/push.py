"""``aimeter grafana push``: create or update the folder, the datasource and the dashboards over HTTP.

Idempotent by comparison, not by blind overwrite: each object is read first and written only when
it differs from what the repository defines, so a second run writes nothing (and a dashboard's
version history only grows when it really changed). The definitions are the provisioning files
Grafana itself loads (dashboards/provisioning/…) and the generated dashboards/json/*.json.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import yaml
from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError

from aimeter.grafana.build import DASHBOARDS_DIR, DATASOURCE_FILE, load_dashboards
from aimeter.grafana.model import Json

PROVIDER_FILE = DASHBOARDS_DIR / "provisioning" / "dashboards" / "aimeter.yaml"
_ENV = re.compile(r"\$\{(\w+)\}|\$(\w+)")
# Dashboard keys Grafana assigns itself; everything else must match for a dashboard to be unchanged.
SERVER_KEYS = ("id", "version")


@dataclass
class PushReport:
    """What a push did to each object: ``created``, ``updated`` or ``unchanged``."""

    actions: dict[str, str] = field(default_factory=dict)

    @property
    def writes(self) -> int:
        return sum(a != "unchanged" for a in self.actions.values())


def clickhouse_variables(url: str) -> dict[str, str]:
    """The provisioning file's CLICKHOUSE_* variables from ``http(s)://user:password@host:port/database``."""
    parsed = urlparse(url)
    if parsed.scheme not in {"http", "https"} or not parsed.hostname:
        raise ValueError(f"--clickhouse-url must be http(s)://user:password@host:port/database, got {url!r}")
    secure = parsed.scheme == "https"
    return {"CLICKHOUSE_HOST": parsed.hostname, "CLICKHOUSE_PORT": str(parsed.port or (8443 if secure else 8123)),
            "CLICKHOUSE_SECURE": str(secure).lower(), "CLICKHOUSE_USER": unquote(parsed.username or "default"),
            "CLICKHOUSE_PASSWORD": unquote(parsed.password or ""),
            "CLICKHOUSE_DATABASE": parsed.path.strip("/") or "default"}


def _substitute(value: Any, env: Mapping[str, str]) -> Any:
    """Grafana's provisioning expansion of ``$VAR`` / ``${VAR}`` in every string value."""
    if isinstance(value, dict):
        return {k: _substitute(v, env) for k, v in value.items()}
    if isinstance(value, str):
        return _ENV.sub(lambda m: env.get(m.group(1) or m.group(2), ""), value)
    return value


def datasource_definition(env: Mapping[str, str], path: Path = DATASOURCE_FILE) -> Json:
    """The provisioned datasource as an HTTP API body (port and secure typed as the API expects)."""
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))["datasources"][0]
    body = _substitute({k: v for k, v in spec.items() if k != "editable"}, env)
    body["jsonData"]["port"] = int(body["jsonData"]["port"])
    body["jsonData"]["secure"] = body["jsonData"]["secure"] == "true"
    if not body.get("secureJsonData", {}).get("password"):
        body.pop("secureJsonData", None)
    return body


def folder_definition(path: Path = PROVIDER_FILE) -> tuple[str, str]:
    provider = yaml.safe_load(path.read_text(encoding="utf-8"))["providers"][0]
    return provider["folderUid"], provider["folder"]


def _get(call: Callable[[], Json]) -> Json | None:
    """The object, or None when Grafana answers 404."""
    try:
        return call()
    except GrafanaClientError as exc:
        if exc.status_code == 404:
            return None
        raise


def ensure_folder(api: GrafanaApi, uid: str, title: str) -> str:
    current = _get(lambda: api.folder.get_folder(uid))
    if current is None:
        api.folder.create_folder(title, uid=uid)
        return "created"
    if current.get("title") != title:
        api.folder.update_folder(uid, title=title, overwrite=True)
        return "updated"
    return "unchanged"


def datasource_differs(current: Json, wanted: Json, *, rotate_password: bool = False) -> bool:
    """Grafana never returns a stored password (only ``secureJsonFields``), so a changed password cannot be seen:
    with ``rotate_password`` the one we hold is sent anyway (after a ClickHouse password rotation)."""
    plain = any(current.get(k) != v for k, v in wanted.items() if k not in {"jsonData", "secureJsonData"})
    settings = current.get("jsonData") or {}
    json_data = any(settings.get(k) != v for k, v in wanted.get("jsonData", {}).items())
    stored = bool((current.get("secureJsonFields") or {}).get("password"))
    password = "secureJsonData" in wanted and (rotate_password or not stored)
    return plain or json_data or password


def ensure_datasource(api: GrafanaApi, wanted: Json, *, rotate_password: bool = False) -> str:
    current = _get(lambda: api.datasource.get_datasource_by_uid(wanted["uid"]))
    if current is None:
        api.datasource.create_datasource(wanted)
        return "created"
    if datasource_differs(current, wanted, rotate_password=rotate_password):
        api.datasource.update_datasource_by_uid(wanted["uid"], wanted)
        return "updated"
    return "unchanged"


def _comparable(dashboard: Json) -> Json:
    return {k: v for k, v in dashboard.items() if k not in SERVER_KEYS}


def ensure_dashboard(api: GrafanaApi, dashboard: Json, folder_uid: str) -> str:
    current = _get(lambda: api.dashboard.get_dashboard(dashboard["uid"]))
    if current is not None and _comparable(current["dashboard"]) == _comparable(dashboard) and \
            current.get("meta", {}).get("folderUid") == folder_uid:
        return "unchanged"
    api.dashboard.update_dashboard({"dashboard": {**dashboard, "id": None}, "folderUid": folder_uid,
                                    "overwrite": True, "message": "aimeter grafana push"})
    return "created" if current is None else "updated"


def push(api: GrafanaApi, datasource: Json, dashboards: list[Json] | None = None, *,
         rotate_password: bool = False, extra_datasources: tuple[Json, ...] = ()) -> PushReport:
    """Folder first (dashboards go in it), then the datasources they name, then each dashboard.
    ``rotate_password`` writes the ClickHouse datasource's password even when Grafana already holds one;
    ``extra_datasources``: e.g. the Prometheus one of the Gateway health dashboard (no password)."""
    if rotate_password and "secureJsonData" not in datasource:
        raise ValueError("--rotate-password needs a password in --clickhouse-url (or the password settings)")
    report = PushReport()
    folder_uid, folder_title = folder_definition()
    report.actions[f"folder {folder_uid}"] = ensure_folder(api, folder_uid, folder_title)
    report.actions[f"datasource {datasource['uid']}"] = ensure_datasource(api, datasource,
                                                                          rotate_password=rotate_password)
    for extra in extra_datasources:
        report.actions[f"datasource {extra['uid']}"] = ensure_datasource(api, extra)
    for dashboard in dashboards if dashboards is not None else load_dashboards():
        report.actions[f"dashboard {dashboard['uid']}"] = ensure_dashboard(api, dashboard, folder_uid)
    return report

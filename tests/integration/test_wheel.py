"""A wheel carries its data files, and an installed copy uses them without the repository (issue 16.5).

The wheel is built from a copy of the source (so the working tree gets no build/ or egg-info) by
pip wheel --no-deps (the build backend comes from pip's cache or index, as for any install), then
unpacked into a directory that stands in for site-packages and imported from there in a fresh interpreter
whose working directory is not the repository.
"""

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "services", "schemas", "dashboards",
           "examples")
# What setup.py ships, relative to the repository root; listed from the repository now, so a new
# migration or dashboard is expected in the wheel without editing this test.
SHIPPED = ("schemas", "dashboards/json", "dashboards/provisioning", "examples/demo.yaml")


def shipped_files() -> list[str]:
    found = []
    for name in SHIPPED:
        path = ROOT / name
        found += [p.relative_to(ROOT).as_posix() for p in ([path] if path.is_file() else path.rglob("*"))
                  if p.is_file() and "__pycache__" not in p.parts]
    return sorted(found)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src, dist = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("dist")
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist),
                    str(src)], check=True, capture_output=True, timeout=300)
    (built,) = dist.glob("aimeter-*.whl")
    return built


def test_the_wheel_holds_every_migration_the_schema_the_dashboards_and_the_demo_config(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = shipped_files()
    assert any(name.startswith("schemas/clickhouse/0001_") for name in expected)
    assert "schemas/usage_event.v1.json" in expected
    assert "dashboards/json/aimeter-spend.json" in expected
    missing = [name for name in expected if f"aimeter/_data/{name}" not in names]
    assert not missing, f"not in {wheel.name}: {missing}"


def test_an_installed_copy_reads_its_own_data_not_the_repository(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = """
import json
import aimeter, aimeter.cli as cli
from aimeter.events.schema import SCHEMA_PATH
from aimeter.grafana.build import DASHBOARDS_DIR
from aimeter.pricer.overrides_load import DEFAULT_OVERRIDES
from aimeter.store.migrations import MIGRATIONS_DIR
print(json.dumps({"package": aimeter.__file__, "schema": str(SCHEMA_PATH), "dashboards": str(DASHBOARDS_DIR),
                  "overrides": str(DEFAULT_OVERRIDES),
                  "migrations": sorted(p.name for p in MIGRATIONS_DIR.glob("*.sql")),
                  "migrations_dir": str(MIGRATIONS_DIR), "demo": str(cli.DEMO_CONFIG)}))
"""
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, check=True, capture_output=True,
                         text=True, timeout=120)
    seen = json.loads(out.stdout)
    for key in ("package", "schema", "dashboards", "overrides", "migrations_dir", "demo"):
        assert Path(seen[key]).is_relative_to(site), (key, seen[key])
        assert Path(seen[key]).exists(), (key, seen[key])
    assert seen["migrations"] == sorted(p.name for p in (ROOT / "schemas" / "clickhouse").glob("*.sql"))
    check = subprocess.run([sys.executable, "-m", "aimeter", "schema", "--check"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120, check=False)
    assert check.returncode == 0, check.stderr
    assert str(site) in check.stdout

"""Kafka's runtime jars from Maven Central, fetched once into a cache shared by every broker.

Maven resolves ``kafka_2.13`` and its runtime dependencies (plus a log4j binding) into
``<cache>/<version>/libs``; a marker written after Maven finished makes a partial download
visible, and a file lock serialises parallel first uses (e.g. several test processes).
"""

from __future__ import annotations

import fcntl
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

KAFKA_VERSION = "4.1.1"
# kafka_2.13 pulls slf4j-api 1.7 and log4j 2.24.3 but no binding between them; without this
# the broker logs nothing at all ("NOP logger") and a failed start leaves no clue.
_LOG4J_VERSION = "2.24.3"
_JAVA_HINT = "install openjdk-17-jre-headless (apt-get install openjdk-17-jre-headless)"
_MAVEN_HINT = "install maven (apt-get install maven)"
_LOG_TAIL_LINES = 20

_DEP = "<dependency><groupId>{}</groupId><artifactId>{}</artifactId><version>{}</version></dependency>"
_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>
  <groupId>aimeter.local</groupId><artifactId>kafka-runtime</artifactId><version>{version}</version>
  <packaging>pom</packaging><dependencies>{deps}</dependencies></project>
"""


def _pom(version: str) -> str:
    deps = (_DEP.format("org.apache.kafka", "kafka_2.13", version),
            _DEP.format("org.apache.logging.log4j", "log4j-slf4j-impl", _LOG4J_VERSION))
    return _POM.format(version=version, deps="".join(deps))


class KafkaSetupError(RuntimeError):
    """The broker cannot be set up or started; the message says what to install or do."""


def _which(tool: str, what: str, hint: str) -> str:
    """Find ``tool`` on PATH as it is now (read at call time, so tests can change it)."""
    found = shutil.which(tool)
    if found is None:
        raise KafkaSetupError(f"{what} not found on PATH: {hint}")
    return found


def find_java() -> str:
    """Return the java executable, refusing anything older than 17 (Kafka 4 needs 17)."""
    java = _which("java", "Java 17+", _JAVA_HINT)
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)  # noqa: S603
    match = re.search(r'version "(\d+)', out.stderr + out.stdout)  # Java 8 says "1.8.0_x": too old
    if match is None or int(match.group(1)) < 17:
        raise KafkaSetupError(f"Java 17+ required but {java} is older: {_JAVA_HINT}")
    return java


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Serialise downloads between processes (e.g. parallel test workers) sharing a cache."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as handle:  # closing the file releases the lock
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _jars_complete(libs: Path, marker: Path) -> bool:
    """True when the marker exists and every jar it lists is still there."""
    if not marker.is_file():
        return False
    names = marker.read_text().split()
    return bool(names) and all((libs / name).is_file() for name in names)


def ensure_jars(
    cache_dir: Path, version: str = KAFKA_VERSION, progress: Callable[[str], None] = print
) -> Path:
    """Return the dir of runtime jars, downloading with Maven on first use.

    Later calls reuse the cache. The marker file is written only after Maven finished, so an
    interrupted download is wiped and redone rather than half-used.
    """
    home = Path(cache_dir) / version
    libs, marker = home / "libs", home / "libs.complete"
    if _jars_complete(libs, marker):
        return libs
    with _locked(home / ".lock"):
        if not _jars_complete(libs, marker):  # another process may have finished meanwhile
            marker.unlink(missing_ok=True)  # a stale list must not bless a partial re-download
            progress(f"Downloading Kafka {version} jars with Maven into {libs} (first use, ~1 min)")
            jars = _maven_copy(home, Path(cache_dir) / "m2", version)
            marker.write_text("\n".join(jars) + "\n")
    return libs


def _maven_copy(home: Path, repo: Path, version: str) -> list[str]:
    """Copy kafka_2.13 and its runtime dependencies into home/libs; return the jar names."""
    mvn = _which("mvn", "Maven", _MAVEN_HINT)
    find_java()  # Maven needs it too; say so before Maven fails obscurely
    libs = home / "libs"
    shutil.rmtree(libs, ignore_errors=True)
    (home / "pom.xml").write_text(_pom(version))
    cmd = [mvn, "-q", "-B", "--no-transfer-progress", "-f", str(home / "pom.xml"),
           f"-Dmaven.repo.local={repo}", "dependency:copy-dependencies",
           f"-DoutputDirectory={libs}", "-DincludeScope=runtime"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
    jars = sorted(p.name for p in libs.glob("*.jar"))
    if out.returncode != 0 or not jars:
        tail = "\n".join((out.stdout + out.stderr).splitlines()[-_LOG_TAIL_LINES:])
        raise KafkaSetupError(f"Maven could not fetch Kafka {version} jars (is Maven Central reachable?); "
                              f"command: {' '.join(cmd)}\n{tail}")
    return jars

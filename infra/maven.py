"""Fetching jars from Maven Central with ``mvn dependency:copy-dependencies``."""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import subprocess
from pathlib import Path

from infra.processes import InfraError

log = logging.getLogger(__name__)

_STAMP = ".fetched-from"


def java_major_version() -> int:
    """The major version of the ``java`` on PATH; InfraError when there is none."""
    if shutil.which("java") is None:
        raise InfraError(
            "Java is needed (Kafka and Spark run on the JVM) but `java` is not on PATH: "
            "install OpenJDK 17 or newer (Debian: apt-get install openjdk-17-jre-headless)"
        )
    result = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr)
    if not match:
        raise InfraError(f"could not read Java's version from: {result.stderr.strip()!r}")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def require_java(minimum: int = 17) -> None:
    major = java_major_version()
    if major < minimum:
        raise InfraError(
            f"Java {minimum} or newer is needed, `java` on PATH is Java {major}: install "
            f"OpenJDK {minimum}+ or put it first on PATH (or set JAVA_HOME and PATH accordingly)"
        )


def fetch_jars(pom: Path, destination: Path, *, log_file: Path) -> list[Path]:
    """Copy the runtime dependencies of ``pom`` into ``destination`` (once per pom content)."""
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    stamp = destination / _STAMP
    if stamp.is_file() and stamp.read_text().strip() == digest:
        return sorted(destination.glob("*.jar"))
    if shutil.which("mvn") is None:
        raise InfraError(
            "Maven is needed to fetch the Kafka and Spark connector jars but `mvn` is not on "
            "PATH: install it (Debian: apt-get install maven)"
        )
    require_java()
    if destination.exists():
        shutil.rmtree(destination)
    destination.mkdir(parents=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    command = [
        "mvn",
        "-B",
        "-q",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={destination}",
    ]
    with open(log_file, "ab") as output:
        result = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, check=False)
    jars = sorted(destination.glob("*.jar"))
    if result.returncode != 0 or not jars:
        raise InfraError(
            f"fetching the jars of {pom} with Maven failed (exit {result.returncode}); is Maven "
            f"Central reachable, and does ~/.m2/settings.xml point at a working mirror? "
            f"Maven's output is in {log_file}"
        )
    stamp.write_text(digest + "\n")
    return jars

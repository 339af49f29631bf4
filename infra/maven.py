"""Fetching jars from Maven Central with ``mvn dependency:copy-dependencies``."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
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


def jar_cache() -> Path:
    """Where fetched jar sets are kept across homes: ``$XDG_CACHE_HOME/wikipulse/jars``
    (``~/.cache/wikipulse/jars``). Like Maven's own ``~/.m2``, a download, not state: a new
    home (or ``down --purge`` and ``up``) links them instead of running Maven again."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "wikipulse" / "jars"


def needs_maven(pom: Path) -> bool:
    """Whether fetching ``pom``'s jars runs Maven (nothing cached for its content yet)."""
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    return not (jar_cache() / digest / _STAMP).is_file()


def fetch_jars(pom: Path, destination: Path, *, log_file: Path) -> list[Path]:
    """The runtime dependencies of ``pom`` in ``destination``: hard links (or copies) of the
    cached set for this pom's content, which Maven fetches the first time."""
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    stamp = destination / _STAMP
    if stamp.is_file() and stamp.read_text().strip() == digest:
        return sorted(destination.glob("*.jar"))
    cached = _cached_jars(pom, digest, log_file=log_file)
    if destination.exists():
        shutil.rmtree(destination)
    destination.mkdir(parents=True)
    for jar in cached:
        try:
            os.link(jar, destination / jar.name)
        except OSError:  # another file system, or no hard links there
            shutil.copy2(jar, destination / jar.name)
    stamp.write_text(digest + "\n")
    return sorted(destination.glob("*.jar"))


def _cached_jars(pom: Path, digest: str, *, log_file: Path) -> list[Path]:
    """The cached jar set of a pom's content; Maven fills it on a miss. Processes fetching at
    the same moment each fetch into a directory of their own, and the first rename wins."""
    cache = jar_cache()
    entry = cache / digest
    if (entry / _STAMP).is_file():
        return sorted(entry.glob("*.jar"))
    if shutil.which("mvn") is None:
        raise InfraError(
            "Maven is needed to fetch the Kafka and Spark connector jars but `mvn` is not on "
            "PATH: install it (Debian: apt-get install maven)"
        )
    require_java()
    cache.mkdir(parents=True, exist_ok=True)
    fetching = Path(tempfile.mkdtemp(prefix=f"{digest[:12]}.fetching-", dir=cache))
    try:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        command = [
            "mvn",
            "-B",
            "-q",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={fetching}",
        ]
        with open(log_file, "ab") as output:
            result = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, check=False)
        if result.returncode != 0 or not any(fetching.glob("*.jar")):
            raise InfraError(
                f"fetching the jars of {pom} with Maven failed (exit {result.returncode}); is "
                f"Maven Central reachable, and does ~/.m2/settings.xml point at a working "
                f"mirror? Maven's output is in {log_file}"
            )
        (fetching / _STAMP).write_text(digest + "\n")
        try:
            fetching.rename(entry)
        except OSError:
            if not (entry / _STAMP).is_file():
                raise
    finally:
        shutil.rmtree(fetching, ignore_errors=True)  # gone already once renamed
    return sorted(entry.glob("*.jar"))

"""Jars fetched once per POM content and machine: a new home links them, Maven runs no more."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.kafka import KAFKA_POM
from infra.maven import fetch_jars, jar_cache, needs_maven
from infra.processes import InfraError

pytestmark = pytest.mark.integration


def test_a_second_home_links_the_cached_jars_without_maven(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = fetch_jars(KAFKA_POM, tmp_path / "first", log_file=tmp_path / "maven.log")
    assert not needs_maven(KAFKA_POM)
    assert any(jar.name.startswith("kafka_2.13-") for jar in first)

    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))  # no mvn, no java
    second = fetch_jars(KAFKA_POM, tmp_path / "second", log_file=tmp_path / "maven.log")
    assert [jar.name for jar in second] == [jar.name for jar in first]
    cached = {jar.name: jar.stat().st_ino for jar in jar_cache().rglob("*.jar")}
    assert all(jar.stat().st_ino == cached[jar.name] for jar in second)  # links, not copies
    # Fetched again only when the POM changes: the home records which content it holds.
    assert fetch_jars(KAFKA_POM, tmp_path / "second", log_file=tmp_path / "maven.log") == second


def test_an_empty_cache_without_maven_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))
    assert jar_cache() == tmp_path / "cache" / "wikipulse" / "jars"
    assert needs_maven(KAFKA_POM)
    with pytest.raises(InfraError, match="Maven is needed"):
        fetch_jars(KAFKA_POM, tmp_path / "home-jars", log_file=tmp_path / "maven.log")
    assert not (tmp_path / "home-jars").exists()

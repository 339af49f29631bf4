"""The ``recorded`` layer: conformance over real recordings read at run time (tests/recordings.py).

Every test here is marked ``recorded``. Without recordings they are reported as not run (one line
at the end of the session, from tests/conftest.py); with ``WIKIPULSE_RECORDINGS`` set they must
run, and the session fails if none did.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.recordings import HOW_TO, recording_files


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.recorded)


@pytest.fixture(scope="session")
def recordings() -> list[Path]:
    """Every recording file; the test is not run (with the reason) when there is none."""
    files = recording_files()
    if not files:
        pytest.skip(f"no recordings: {HOW_TO}")
    return files

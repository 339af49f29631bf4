"""`streamlit run` puts the entry file's folder first on ``sys.path``: every module there is
then importable by its bare name, and would hide a package of that name (``dashboards/app.py``
once hid the ``app`` package). Pure: no database, no Streamlit run."""

from __future__ import annotations

import importlib.util

from infra.dashboard import APP_FILE


def test_the_entry_file_is_in_the_dashboards_folder() -> None:
    assert APP_FILE.is_file() and APP_FILE.parent.name == "dashboards"


def test_no_module_beside_the_entry_file_shadows_an_importable_one() -> None:
    names = sorted(path.stem for path in APP_FILE.parent.glob("*.py") if path.stem != "__init__")
    assert APP_FILE.stem in names
    shadowing = {name: spec.origin for name in names if (spec := importlib.util.find_spec(name))}
    assert not shadowing, f"these modules of dashboards/ hide importable ones: {shadowing}"

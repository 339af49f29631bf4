"""``python -m app.contract``: regenerate the committed JSON Schema of the current version."""

from __future__ import annotations

import sys

from app.contract import SCHEMA_FILE, render_json_schema

SCHEMA_FILE.parent.mkdir(exist_ok=True)
SCHEMA_FILE.write_text(render_json_schema(), encoding="utf-8")
sys.stdout.write(f"wrote {SCHEMA_FILE}\n")

"""``python -m app.contract``: regenerate the committed JSON Schema of every version."""

from __future__ import annotations

import sys

from app.contract.versions import CONTRACTS, SCHEMAS_DIR

SCHEMAS_DIR.mkdir(exist_ok=True)
for contract in CONTRACTS.values():
    contract.schema_file.write_text(contract.render_json_schema(), encoding="utf-8")
    sys.stdout.write(f"wrote {contract.schema_file}\n")

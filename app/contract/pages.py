"""Where a page lives on its wiki: one rule for the dashboard's links and the alerts' bodies."""

from __future__ import annotations

from urllib.parse import quote


def page_url(server_name: str, title: str) -> str:
    """The page on its wiki: ``https://<server_name>/wiki/<title>``, spaces as underscores."""
    return f"https://{server_name}/wiki/{quote(title.replace(' ', '_'), safe=':/')}"

"""Which layout a home runs: one node of everything, or the loopback cluster
(``wikipulse.layout``, app/config/conf/layout.cluster.yaml). ``up`` records it in the home, so that
every later command there, and every process they start, uses the same keys without a flag."""

from __future__ import annotations

import os

from app.config import Settings, load_settings
from app.config.keys import env_var_name
from app.config.loading import LAYOUT_KEY
from app.config.settings import CLUSTER, SINGLE
from infra.home import Home
from infra.processes import InfraError

LAYOUT_VARIABLE = env_var_name(LAYOUT_KEY)


def recorded_layout(home: Home) -> str | None:
    try:
        return home.layout_file.read_text().strip() or None
    except OSError:
        return None


def record_layout(home: Home, layout: str) -> None:
    home.root.mkdir(parents=True, exist_ok=True)
    home.layout_file.write_text(layout + "\n")


def _with_layout(layout: str) -> Settings:
    # In this process's environment: the processes it starts load the same keys.
    os.environ[LAYOUT_VARIABLE] = layout
    return load_settings()


def settings_for(requested: str | None = None) -> Settings:
    """The settings of a command: ``requested`` (``up --cluster``), else the cluster layout
    when the configuration names it, else the layout the home recorded. A home whose Kafka
    holds data of one layout cannot move to the other (a single node's log cannot join a
    three-voter quorum)."""
    settings = load_settings()
    home = Home(settings.home)
    recorded = recorded_layout(home)
    if requested is not None and requested != settings.wikipulse.layout:
        settings = _with_layout(requested)
    elif requested is None and recorded == CLUSTER and settings.wikipulse.layout == SINGLE:
        settings = _with_layout(recorded)  # the default gives way to what `up` recorded
    layout = settings.wikipulse.layout
    if recorded is not None and recorded != layout and home.kafka_data.exists():
        flag = "--cluster" if layout == CLUSTER else f"{LAYOUT_VARIABLE}={SINGLE}"
        raise InfraError(
            f"{home.root} runs the {recorded} layout and its Kafka holds data: it cannot move to "
            f"the {layout} layout ({flag}). `./infra/wikipulse down --purge` deletes this home "
            "first, or set WIKIPULSE_HOME to another directory"
        )
    return settings

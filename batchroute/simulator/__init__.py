"""Offline fake of the OpenRouter HTTP API (with its failures) for tests, benchmarks and demos.

Imports only `batchroute.catalog` from the library; the library never imports it (except the
CLI's `batchroute simulate`). See docs/simulator.md for the scenario format.
"""

from __future__ import annotations

from batchroute.simulator.app import create_app, set_scenario
from batchroute.simulator.scenario import (
    FAULTS,
    PRESETS,
    Lognormal,
    ModelOverride,
    Normal,
    Outage,
    Scenario,
    ScriptStep,
    load_scenario,
)
from batchroute.simulator.server import SimulatorThread, serve
from batchroute.simulator.state import SIM_STATE, SimState

__all__ = [
    "FAULTS",
    "PRESETS",
    "SIM_STATE",
    "Lognormal",
    "ModelOverride",
    "Normal",
    "Outage",
    "Scenario",
    "ScriptStep",
    "SimState",
    "SimulatorThread",
    "create_app",
    "load_scenario",
    "serve",
    "set_scenario",
]

"""The simulated Batch API keeps its batches in the simulator process: a client killed with -9
mid-wait, and a new client afterwards, see the same batch (real `batchroute simulate`)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from subprocs import WAIT_S, reaped, simulator
from test_simulator_batches import batch_body

SUBMIT_AND_HANG = """
import json, sys, time, urllib.request
req = urllib.request.Request(sys.argv[1] + "/batches", data=sys.argv[2].encode(),
    headers={"Authorization": "Bearer sk-test", "Content-Type": "application/json"})
with urllib.request.urlopen(req, timeout=60) as r:
    print(r.status, json.load(r)["id"], flush=True)
time.sleep(3600)  # a runner waiting for its batch, until killed
"""


def _get(url: str) -> Any:
    req = urllib.request.Request(url, headers={"Authorization": "Bearer sk-test"})
    with urllib.request.urlopen(req, timeout=WAIT_S) as r:
        return json.load(r)


def test_a_batch_outlives_a_client_killed_with_sigkill(tmp_path: Path) -> None:
    scenario = tmp_path / "lag.json"  # a long read-after-write lag: the 404 below is certain
    scenario.write_text(json.dumps({"batch_not_found_s": 600}))
    with simulator("--seed", "4", "--scenario", str(scenario)) as sim:
        child = subprocess.Popen(
            [sys.executable, "-c", SUBMIT_AND_HANG, sim.base_url, json.dumps(batch_body(3))],
            stdout=subprocess.PIPE,
            text=True,
        )
        with reaped(child):
            assert child.stdout is not None
            status, batch_id = child.stdout.readline().split()
            assert status == "202"
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=WAIT_S)
        with pytest.raises(urllib.error.HTTPError) as early:  # not visible yet, not lost
            _get(f"{sim.base_url}/batches/{batch_id}")
        early.value.close()
        assert early.value.code == 404
        sim.advance(3600)
        batch = _get(f"{sim.base_url}/batches/{batch_id}")
        assert batch["status"] == "completed"
        assert sorted(r["custom_id"] for r in batch["results"]) == [
            "rec-00000",
            "rec-00001",
            "rec-00002",
        ]
        ledger = sim.ledger()
        assert (ledger["batches"], ledger["batch_items"]) == (1, 3)

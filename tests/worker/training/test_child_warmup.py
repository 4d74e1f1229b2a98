"""child_warmup: a training child imports what the parent could not while it waits for a run."""

from __future__ import annotations

import json
import subprocess
import sys

from worker.training.child_warmup import WARMED

READY = """
import json, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
from worker.training import child_warmup
{patch}
child_warmup.start_warmup(signal=None, sender=None)
child_warmup.wait_for_warmup()
print(json.dumps({{
    "imported": sorted(name for name in child_warmup.WARMED if name in sys.modules),
    "thread_alive": child_warmup._warmup.is_alive(),
}}))
"""


def run_child(patch: str = "") -> tuple[dict, str]:
    done = subprocess.run(
        [sys.executable, "-c", READY.format(patch=patch)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_the_child_imports_the_training_libraries_before_its_run() -> None:
    report, log = run_child()
    assert report == {"imported": sorted(WARMED), "thread_alive": False}
    assert "training child ready in" in log


def test_a_failed_warm_up_is_logged_and_the_run_goes_on() -> None:
    report, log = run_child('child_warmup.WARMED = ("no_such_module_for_loraboard",)')
    assert report == {"imported": [], "thread_alive": False}
    assert "warm-up failed; the run will import what it needs" in log
    assert "No module named 'no_such_module_for_loraboard'" in log


def test_without_a_warm_up_a_run_does_not_wait() -> None:
    from worker.training import child_warmup

    child_warmup.wait_for_warmup()  # this process began none: returns at once

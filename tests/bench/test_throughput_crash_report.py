"""bench/throughput.py keeps the stack of a variant that crashes in native code."""

from __future__ import annotations

import subprocess
import sys

from bench.throughput import _fault_report


def test_a_segmentation_faults_report_starts_at_the_crashing_threads_stack() -> None:
    crash = "import ctypes\ndef crash_here():\n    ctypes.string_at(0)\ncrash_here()\n"
    # the bench starts its children with faulthandler on, as here
    proc = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", crash], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == -11
    report = _fault_report(proc.stderr)
    assert report is not None and report.startswith("Fatal Python error: Segmentation fault")
    assert "crash_here" in report  # the Python frames of the thread that crashed
    assert "Extension modules" not in report
    assert _fault_report("Traceback (most recent call last):\nValueError: no crash\n") is None

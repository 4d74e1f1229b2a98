"""Where the tests find the project's own files, whatever folder a test lives in."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEMO_DATA = PROJECT_ROOT / "data" / "demo"
ARTIFACTS = PROJECT_ROOT / "test-artifacts"  # logs and screenshots of the test processes

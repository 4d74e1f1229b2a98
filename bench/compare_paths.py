"""The same training on both paths: the reference recipe and Loraboard's trainer on the demo task.

--preset smollm2 trains the real SmolLM2-135M-Instruct instead of the random-weight demo
model (--model-dir: its converted directory, on a machine without the Hugging Face
cache), --compute-dtype bfloat16 trains both in bf16, and --compiled adds Loraboard's
path with its compiled decoder layers forced on (they switch on by themselves only
for hidden sizes >= 2048), so that the fast path is checked on real weights too.

Same seed, data and order; prints the logged losses of both, their largest relative
difference after step 10, and each adapter's exact answers on the held-out prompts
(greedy), so "faster" can be checked to still mean "the same training". With --controls,
the reference also trains changed in one way only (its LoRA A weights one float32 ulp up;
another seed: the run's + 1), which measures how much the demo's training amplifies a tiny difference.

    python bench/compare_paths.py --controls --out compare.json   # on a CUDA machine (or CPU, slowly)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.services.completions import QUANTIZATION_FIELDS  # noqa: E402
from core.demo_dataset import demo_dataset_path  # noqa: E402
from core.run_config import DEMO_DATASET_ID, PRESETS, RunConfig, preset_config  # noqa: E402
from worker.training.inference import clear_cache, generate_chat  # noqa: E402
from worker.training.reporting import DataSources, MemoryReporter  # noqa: E402
from worker.training.trainer import run_training  # noqa: E402


def held_out_accuracy(adapter: Path, config, models_dir: Path, limit: int) -> float:
    rows = [json.loads(line) for line in demo_dataset_path("heldout").read_text().splitlines()][:limit]
    quantization = {name: getattr(config, name) for name in QUANTIZATION_FIELDS}
    right = 0
    for row in rows:
        answer = generate_chat(
            config.model_name,
            str(adapter),
            row["messages"][:-1],
            models_dir=models_dir,
            use_4bit=config.use_4bit,
            quantization=quantization,
            max_tokens=8,
            temperature=0,
        )
        right += answer["content"].strip() == row["messages"][-1]["content"].strip()
    return right / len(rows)


@contextlib.contextmanager
def lora_a_nudged_by_one_ulp():
    """Every LoRA A weight moved to the next float32 value up as the adapter is made.

    A change of about 1e-7 relative: the size of the rounding differences between two
    correct kernels. The reference trained from it shows how far the demo's training
    amplifies such a difference, with no kernel changed at all.
    """
    import peft
    import torch

    original = peft.get_peft_model
    made = []

    def nudged(*args, **kwargs):
        model = original(*args, **kwargs)
        made.append(model)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "lora_A" in name:
                    parameter.copy_(torch.nextafter(parameter, torch.full_like(parameter, math.inf)))
        return model

    peft.get_peft_model = nudged  # trainer.py imports it inside run_training, so this is seen
    try:
        yield
    finally:
        peft.get_peft_model = original
    if not made:  # a control that changed nothing would read as "the reference is stable"
        raise RuntimeError("no adapter was made through peft.get_peft_model: nothing was nudged")


@contextlib.contextmanager
def compiled_layers_forced():
    """Loraboard's planner compiles the decoder layers whatever the model's hidden size."""
    from worker.training import acceleration

    threshold = acceleration.COMPILE_MIN_HIDDEN_SIZE
    acceleration.COMPILE_MIN_HIDDEN_SIZE = 0
    try:
        yield
    finally:
        acceleration.COMPILE_MIN_HIDDEN_SIZE = threshold


# Controls, each the reference recipe changed in one way: (trainer, seed offset, context).
CONTROLS = {
    "reference-lora-a-nudged": ("reference", 0, lora_a_nudged_by_one_ulp),
    "reference-next-seed": ("reference", 1, contextlib.nullcontext),
}
COMPILED = {"loraboard-compiled": ("loraboard", 0, compiled_layers_forced)}
WINDOWS = ((11, 50), (51, 100), (101, 150), (151, 10**9))


def relative_differences(reference: dict[int, float], losses: dict[int, float]) -> dict[int, float]:
    return {
        step: abs(losses[step] - loss) / abs(loss)
        for step, loss in reference.items()
        if step > 10 and step in losses
    }


def interval_means(losses: dict[int, float], every: int) -> dict[int, float]:
    """The losses as the trainer logs them every `every` steps: the mean since the last log."""
    return {
        end: statistics.fmean(losses[step] for step in range(end - every + 1, end + 1))
        for end in losses
        if end % every == 0 and all(step in losses for step in range(end - every + 1, end + 1))
    }


def loss_agreement(reference: dict[int, float], losses: dict[int, float], every: int) -> dict:
    """How closely one path's per-step losses follow the reference's after step 10."""
    differences = relative_differences(reference, losses)
    windows = {}
    for first, last in WINDOWS:
        inside = [value for step, value in differences.items() if first <= step <= last]
        if inside:
            windows[f"{first}..{min(last, max(differences))}"] = {
                "largest": round(max(inside), 4),
                "median": round(statistics.median(inside), 4),
                "share_within_2_percent": round(sum(v <= 0.02 for v in inside) / len(inside), 3),
            }
    logged = relative_differences(interval_means(reference, every), interval_means(losses, every))
    return {
        "max_relative_difference_after_step_10": max(differences.values(), default=None),
        "first_step_past_2_percent": next(
            (step for step, value in sorted(differences.items()) if value > 0.02), None
        ),
        "windows": windows,
        # What the preset itself logs (a mean every `every` steps) compared the same way.
        f"max_relative_difference_of_{every}_step_means_after_step_10": max(logged.values(), default=None),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--max-steps", type=int, default=-1, help="shorten the demo (smoke runs)")
    parser.add_argument("--eval-limit", type=int, default=80)
    parser.add_argument(
        "--controls",
        action="store_true",
        help="also train the reference with its LoRA A nudged by one float32 ulp, and with another seed",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=RunConfig.model_fields["seed"].default,
        help="the seed both paths train with",
    )
    parser.add_argument("--preset", choices=["demo", "smollm2"], default="demo")
    parser.add_argument("--model-dir", default="", help="load the preset's model from this directory")
    parser.add_argument("--compute-dtype", choices=["float16", "bfloat16", "float32"], default=None)
    parser.add_argument(
        "--compiled", action="store_true", help="also Loraboard with compiled layers forced on"
    )
    parser.add_argument(
        "--disable", nargs="*", default=[], help="Loraboard features to leave off (ablations)"
    )
    parser.add_argument(
        "--paths", nargs="*", default=None, help="which paths to train (default: all asked for)"
    )
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    import torch

    scratch = Path(tempfile.mkdtemp(prefix="loraboard-paths-"))
    models_dir = scratch / "models"
    result: dict = {
        "card": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "seed": args.seed,
    }
    variants = {**CONTROLS, **COMPILED}
    paths = ["reference", "loraboard"] + (list(COMPILED) if args.compiled else [])
    paths += list(CONTROLS) if args.controls else []
    paths = args.paths or paths
    overrides = {"model_name": args.model_dir} if args.model_dir else {}
    if args.compute_dtype:
        overrides["bnb_4bit_compute_dtype"] = args.compute_dtype
    result["preset"], result["overrides"], result["disabled"] = args.preset, overrides, args.disable
    for path in paths:
        trainer, seed_offset, perturbation = variants.get(path, (path, 0, contextlib.nullcontext))
        config = preset_config(
            args.preset,
            trainer=trainer,
            max_steps=args.max_steps,
            logging_steps=1,
            seed=args.seed + seed_offset,
            **overrides,
        )
        reporter = MemoryReporter()
        started = time.perf_counter()
        with perturbation():
            run_training(
                config,
                scratch / path,
                reporter,
                DataSources(train=DEMO_DATASET_ID),
                models_dir,
                disable_acceleration=frozenset(args.disable),
            )
        train_seconds = time.perf_counter() - started
        clear_cache()
        result[path] = {
            "losses": {row.step: row.loss for row in reporter.metric_rows if row.loss is not None},
            "held_out_exact": held_out_accuracy(
                scratch / path / "adapter", config, models_dir, args.eval_limit
            ),
            "train_seconds": round(train_seconds, 1),
            "acceleration": reporter.runtime_values.get("acceleration"),
        }
    reference = result["reference"]["losses"]
    for path in paths[1:]:
        every = int(PRESETS[args.preset]["logging_steps"])
        result[f"{path}_against_reference"] = loss_agreement(reference, result[path]["losses"], every)
    print(json.dumps({key: value for key, value in result.items() if key not in paths}))
    print(json.dumps({path: {k: v for k, v in result[path].items() if k != "losses"} for path in paths}))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The same training on both paths: the reference recipe and Loraboard's trainer on the demo task.

Same seed, data and order; prints the logged losses of both, their largest relative
difference after step 10, and each adapter's exact answers on the held-out prompts
(greedy), so "faster" can be checked to still mean "the same training".

    python bench/compare_paths.py --out compare.json     # on a CUDA machine (or on CPU, slowly)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.run_config import DEMO_DATASET_ID, preset_config  # noqa: E402
from app.services.completions import QUANTIZATION_FIELDS  # noqa: E402
from worker.training.demo_dataset import demo_dataset_path  # noqa: E402
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


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--max-steps", type=int, default=-1, help="shorten the demo (smoke runs)")
    parser.add_argument("--eval-limit", type=int, default=80)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    import torch

    scratch = Path(tempfile.mkdtemp(prefix="loraboard-paths-"))
    models_dir = scratch / "models"
    result: dict = {"card": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}
    paths = ["reference", "loraboard"]
    for path in paths:
        config = preset_config("demo", trainer=path, max_steps=args.max_steps, logging_steps=1)
        reporter = MemoryReporter()
        run_training(config, scratch / path, reporter, DataSources(train=DEMO_DATASET_ID), models_dir)
        clear_cache()
        result[path] = {
            "losses": {row.step: row.loss for row in reporter.metric_rows if row.loss is not None},
            "held_out_exact": held_out_accuracy(
                scratch / path / "adapter", config, models_dir, args.eval_limit
            ),
            "acceleration": reporter.runtime_values.get("acceleration"),
        }
    reference = result["reference"]["losses"]
    for path in paths[1:]:
        losses = result[path]["losses"]
        after_10 = [step for step in reference if step > 10 and step in losses]
        result[f"{path}_max_relative_loss_difference_after_step_10"] = max(
            (abs(losses[step] - reference[step]) / abs(reference[step]) for step in after_10),
            default=None,  # a smoke run of 10 steps or fewer
        )
    print(json.dumps({key: value for key, value in result.items() if key not in paths}))
    print(json.dumps({path: {k: v for k, v in result[path].items() if k != "losses"} for path in paths}))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

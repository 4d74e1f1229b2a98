"""Which part of Loraboard's compiled layers makes CUDA graphs crash? (bench experiment x-cudagraphs)

Round 4 replayed the compiled decoder layers as CUDA graphs (torch.compile's
"reduce-overhead" mode) on the 7B workload: the process died with a segmentation fault in
the first compiled backward, with bitsandbytes' ops in the graph and without them. This
script trains a small Llama (2 layers, hidden 512) on CUDA with the same compiled layers,
one case per process (a crash takes only its own process), adding one of Loraboard's
parts at a time:

  plain        bf16 Llama, no quantization, no LoRA: the layers compiled with the recompute
               in the graph, as CUDA graphs (the input's gradient makes the backward run)
  static       the same with static shapes (one length) instead of symbolic ones
  4bit         + NF4 base weights dequantized in the graph (graph_dequantization.py)
  lora         + LoRA adapters on q and v (dropout 0)
  dropout      + LoRA dropout 0.1, seeded (seeded_dropout.py): the worker's whole path
  bnb-ops      the worker's path with bitsandbytes' own ops instead of the graph dequantization
  no-cudagraphs  the worker's path without CUDA graphs (the control)
  static-dropout the worker's path with static shapes (one length)

Each case trains 4 steps on lengths that are multiples of 64 (as x-cudagraphs pads them)
with one padded row per batch, and prints one JSON line: finished or not, the exit code,
faulthandler's report, the losses, and seconds per step after the first two.

Usage (GPU machine): python3 bench/cuda_graph_bisect.py [--cases plain,4bit] [--out f.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.run_bench import _fault_report  # noqa: E402  (needs ROOT on the path)

CASES = ("plain", "static", "4bit", "lora", "dropout", "bnb-ops", "no-cudagraphs", "static-dropout")
LENGTHS = (128, 192, 128, 256)
VOCAB = 1000


def build_model(case: str, path: Path, device: str):
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig, LlamaConfig, LlamaForCausalLM

    from worker.training.acceleration.compile import compile_decoder_layers

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=512,
        intermediate_size=1024,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=8,
        max_position_embeddings=512,
        pad_token_id=0,
    )
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(path)
    quantized = case not in ("plain", "static")
    static = case.startswith("static")
    kwargs = {}
    if quantized:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
        )
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.bfloat16, attn_implementation="sdpa", device_map={"": device}, **kwargs
    )
    model.config.use_cache = False
    compile_decoder_layers(model, recompute=True, dequantize_in_graph=quantized and case != "bnb-ops")
    if case != "no-cudagraphs":
        for layer in model.model.layers:  # replaces compile_decoder_layers' own compile
            layer.compile(dynamic=not static, mode="reduce-overhead")
    if case in ("lora", "dropout", "bnb-ops", "no-cudagraphs", "static-dropout"):
        from peft import LoraConfig, get_peft_model

        from worker.training.acceleration.seeded_dropout import use_seeded_dropout

        dropout = 0.0 if case == "lora" else 0.1
        model = get_peft_model(
            model, LoraConfig(r=16, lora_alpha=16, lora_dropout=dropout, target_modules=["q_proj", "v_proj"])
        )
        use_seeded_dropout(model)
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.data = parameter.data.to(torch.bfloat16)
    else:
        for parameter in model.parameters():
            parameter.requires_grad_(False)
    model.enable_input_require_grads()  # the layers' backward runs even with nothing to train
    return model.train()


def run_case(case: str) -> dict:
    """Train `case` for len(LENGTHS) steps; on CPU (no CUDA graphs there) it checks the plumbing."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(case, Path(tmp), device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4) if trainable else None
    losses, times = [], []
    generator = torch.Generator().manual_seed(0)
    for length in (LENGTHS[0],) * len(LENGTHS) if case.startswith("static") else LENGTHS:
        input_ids = torch.randint(3, VOCAB, (2, length), generator=generator).to(device)
        attention_mask = torch.ones_like(input_ids)
        attention_mask[1, length // 2 :] = 0
        start = time.perf_counter()
        torch.compiler.cudagraph_mark_step_begin()
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=input_ids).loss
        loss.backward()
        if optimizer is not None:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return {"losses": [round(x, 5) for x in losses], "step_s": [round(t, 3) for t in times]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--timeout", type=float, default=240)
    parser.add_argument("--out")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        print("CASE_RESULT " + json.dumps(run_case(args.case)), flush=True)
        return 0

    cases = [c for c in args.cases.split(",") if c]
    unknown = set(cases) - set(CASES)
    if unknown:
        raise SystemExit(f"unknown cases {sorted(unknown)}; known: {list(CASES)}")
    # All cases at once: each is a small model, and a GPU machine has cores to spare.
    command = [sys.executable, "-X", "faulthandler", str(Path(__file__).resolve()), "--case"]
    running = {
        case: subprocess.Popen([*command, case], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for case in cases
    }
    results = []
    for case, process in running.items():
        try:
            stdout, stderr = process.communicate(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        lines = [line for line in stdout.splitlines() if line.startswith("CASE_RESULT ")]
        result = {"case": case, "exit_code": process.returncode, "finished": bool(lines)}
        if lines:
            result |= json.loads(lines[-1].removeprefix("CASE_RESULT "))
        else:
            result["fault"] = _fault_report(stderr)
            result["stderr_tail"] = stderr[-3000:]
        results.append(result)
        print(json.dumps(result), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

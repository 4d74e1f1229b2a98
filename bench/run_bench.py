"""QLoRA throughput benchmark: the classic recipe against Loraboard's trainer.

Builds the workload of shared/bench/WORKLOAD.md on one CUDA GPU (a Llama-2-7B-shaped
model with random fp16 weights, saved with save_pretrained and loaded back in 4 bit
like a user's model; 1000 pre-tokenized random samples with lognormal lengths),
trains each variant in its own process for --steps optimizer steps and prints one
JSON line per variant:

  tokens_per_s   real (non-pad) tokens of the timed steps / their wall time
  s_per_step     wall time of the timed steps / their number
  epoch_s        a whole epoch's wall time (--full-epoch), else
  epoch_s_extrapolated  all the data's tokens / tokens_per_s (labelled as such)
  peak_allocated_gib / peak_reserved_gib   during training (after loading)
  host_ms_per_phase  median host milliseconds per phase of a timed step (bench/step_phases.py)

Timed steps are warmup+1 .. steps (default 9..40). The device is synchronized at the
ends of the timed window only, so a trainer whose host queues the next step while the
GPU still runs this one is timed as it trains; --sync-every-step synchronizes at every
step end instead (rounds 1-6 were timed so: it makes each step wait for the GPU).
--host-syncs N records where the host waits for the GPU in the N steps after the
warm-up (bench/host_syncs.py; those steps are slower, so their variant's timing is not
a measurement). --profile V profiles variant V in 3 steps after the timed ones (their
batches may be short ones), or with --profile-window the timed steps themselves (then
their timing is not a measurement).

Variants:
  reference     the recipe as written (fp16 compute, no mixed precision,
                paged_adamw_32bit, group_by_length, gradient checkpointing, ...)
  loraboard     the same arguments plus worker.training.acceleration.plan_acceleration()
  lb-no-<f>     loraboard without default feature <f> (sdpa, bf16, liger, compile,
                dequant; join several with +, e.g. lb-no-liger+sdpa): ablations
  lb+<f>        loraboard with opt-in feature <f> (optimizer, offload; e.g.
                lb+optimizer+offload, or lb+optimizer+no-compile to leave a default
                feature off too); see worker/training/acceleration/
  lb+x-<e>      loraboard with the bench-only experiment <e> (bench/experiments.py;
                e.g. lb+x-cudagraphs)
  <v>@memory    variant <v> with every allocation recorded (bench/memory_at_peak.py):
                the result's memory_at_peak says what was alive at the peak; its
                speed is not a measurement (recording slows the CPU)

Usage (on the GPU machine, after bench/build_gpu_deps.sh here):
  PYTHONPATH=$PWD/.gpu-deps:$PWD python3 bench/run_bench.py --variants reference,loraboard \
      --out bench/results/h100.json
  python bench/run_bench.py --tiny       # a few seconds on CPU: checks the plumbing
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.step_phases import StepPhases  # noqa: E402  (needs ROOT on the path)

N_SAMPLES = 1000
MAX_LEN = 1024
VOCAB = 32000
TINY_MAX_LEN = 64  # --tiny: same length draws, capped, so a CPU step takes well under a second
MEMORY_HISTORY = "memory"  # the variant suffix "@memory"
FIRST_TOKEN_ID = 3  # 0 <unk>, 1 <s>, 2 </s> (also the pad token, as in the classic recipe)


# ---------------------------------------------------------------- workload ---


def sample_lengths(n: int = N_SAMPLES, max_len: int = MAX_LEN) -> list[int]:
    """Lengths of WORKLOAD.md: max(32, min(1024, int(lognormvariate(log 300, 0.8)))), Random(0) in order."""
    rng = random.Random(0)
    return [max(32, min(max_len, int(rng.lognormvariate(math.log(300), 0.8)))) for _ in range(n)]


def make_samples(lengths: list[int], vocab: int) -> list[list[int]]:
    """Random token ids, from their own generator so that the lengths stay those of Random(0)."""
    rng = random.Random(1)
    return [[rng.randrange(FIRST_TOKEN_ID, vocab) for _ in range(n)] for n in lengths]


# Llama-2 shapes: hidden size, MLP size, layers (heads = hidden / 128, as in Llama-2).
LLAMA2_SHAPES = {"7b": (4096, 11008, 32), "13b": (5120, 13824, 40)}


def model_config(tiny: bool, shape: str = "7b"):
    from transformers import LlamaConfig

    if tiny:
        return LlamaConfig(
            vocab_size=512,
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            rms_norm_eps=1e-5,
            max_position_embeddings=MAX_LEN,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=2,
        )
    hidden, intermediate, layers = LLAMA2_SHAPES[shape]
    return LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 128,
        num_key_value_heads=hidden // 128,
        rms_norm_eps=1e-5,
        max_position_embeddings=4096,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )


def make_tokenizer(vocab: int):
    """A word-level tokenizer with the model's vocabulary size: the data come pre-tokenized,
    the trainer only needs its pad/eos tokens (no hub access on the GPU machine)."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    words = {"<unk>": 0, "<s>": 1, "</s>": 2} | {f"t{i}": i for i in range(FIRST_TOKEN_ID, vocab)}
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(words, unk_token="<unk>")),
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
    )
    tok.pad_token = tok.eos_token  # the classic recipe's choice
    return tok


def build_model_dir(path: Path, tiny: bool, shape: str = "7b") -> None:
    """Random weights made on the device in float16 and saved like a downloaded checkpoint."""
    import torch
    from transformers import LlamaForCausalLM

    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = model_config(tiny, shape)
    t0 = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM._from_config(cfg, dtype=torch.float16)
    model.save_pretrained(path)
    make_tokenizer(cfg.vocab_size).save_pretrained(path)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    print(f"# model built and saved to {path} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)


# ------------------------------------------------------------------ recipe ---


def reference_arguments(out_dir: str, steps: int, tiny: bool) -> dict:
    """The classic QLoRA recipe (PARAMETERS.md) in transformers 5 / trl 1.x names."""
    import torch

    return {
        "model": {"device_map": {"": 0} if torch.cuda.is_available() else None},
        "quantization": {
            "load_in_4bit": True,
            "bnb_4bit_quant_type": "nf4",
            "bnb_4bit_compute_dtype": torch.float16,
            "bnb_4bit_use_double_quant": False,
        },
        "lora": {
            "r": 64,
            "lora_alpha": 16,
            "lora_dropout": 0.1,
            "bias": "none",
            "task_type": "CAUSAL_LM",
            "target_modules": ["q_proj", "v_proj"],
        },
        "sft": {
            "output_dir": out_dir,
            "num_train_epochs": 1,
            "max_steps": steps,
            "per_device_train_batch_size": 4,
            "gradient_accumulation_steps": 1,
            "gradient_checkpointing": True,
            "optim": "paged_adamw_32bit",
            "save_strategy": "no",  # save_steps=0
            "logging_steps": 25,
            "learning_rate": 2e-4,
            "weight_decay": 0.001,
            "fp16": False,
            "bf16": False,
            "max_grad_norm": 0.3,
            "warmup_steps": 0.03,  # warmup_ratio=0.03
            "train_sampling_strategy": "group_by_length",  # group_by_length=True
            "lr_scheduler_type": "cosine",
            "max_length": MAX_LEN,  # max_seq_length=None -> trl's default
            "packing": False,
            "report_to": "none",
            "seed": 42,
            "use_cpu": not torch.cuda.is_available(),
            "dataloader_num_workers": 0,
        },
    }


def variant_plan(variant: str, hidden_size: int):
    """The Acceleration for a variant (None for the reference)."""
    import torch

    from worker.training.acceleration import plan_acceleration

    if variant == "reference":
        return None
    disable: frozenset[str] = frozenset()
    enable: frozenset[str] = frozenset()
    experiments: frozenset[str] = frozenset()
    if variant.startswith("lb-no-"):
        disable = frozenset(variant.removeprefix("lb-no-").split("+"))
    elif variant.startswith("lb+"):
        # lb+optimizer+no-compile: opt-in features, "no-" for default features left off,
        # "x-" for the bench's own experiments (bench/experiments.py)
        words = variant.removeprefix("lb+").split("+")
        experiments = frozenset(w for w in words if w.startswith("x-"))
        enable = frozenset(w for w in words if not w.startswith(("no-", "x-")))
        disable = frozenset(w.removeprefix("no-") for w in words if w.startswith("no-"))
    elif variant != "loraboard":
        raise SystemExit(f"unknown variant {variant!r}")
    if torch.cuda.is_available():
        plan = plan_acceleration(
            "cuda",
            torch.cuda.get_device_capability(),
            True,
            False,
            hidden_size=hidden_size,
            compute_dtype="float16",  # the recipe's (reference_arguments)
            disable=disable,
            enable=enable,
        )
    else:
        plan = plan_acceleration("cpu", None, True, False, disable=disable, enable=enable)
    if experiments:
        from bench import experiments as bench_experiments

        bench_experiments.apply(plan, experiments)
    return plan


class StepClock:
    """Trainer callback: wall time at the end of every optimizer step.

    The device is synchronized before the time is taken at the steps in `synced_steps`
    (the timed window's edges) and at the last step, or at every step when it is None;
    elsewhere the time is the host's.
    """

    def __init__(self, synced_steps: set[int] | None = None):
        from transformers import TrainerCallback

        clock = self

        class _CB(TrainerCallback):
            def on_train_begin(self, args, state, control, **kw):
                clock.sync()
                clock.times = [time.perf_counter()]

            def on_step_end(self, args, state, control, **kw):
                step = state.global_step
                if synced_steps is None or step in synced_steps or step == state.max_steps:
                    clock.sync()
                clock.times.append(time.perf_counter())

        self.callback = _CB()
        self.times: list[float] = []

    @staticmethod
    def sync():
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()


class CountingCollator:
    """Wraps the trainer's collator and records each batch's real token count, in batch order
    (the dataloader may fetch one batch ahead, so counts are kept per batch, not per step)."""

    def __init__(self, inner):
        self.inner = inner
        self.counts: list[int] = []

    def __call__(self, examples):
        self.counts.append(sum(len(e["input_ids"]) for e in examples))
        return self.inner(examples)


def run_variant(args) -> dict:
    import bitsandbytes
    import peft
    import torch
    import transformers
    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    cuda = torch.cuda.is_available()
    variant, _, recording = args.child.partition("@")
    if recording not in ("", MEMORY_HISTORY):
        raise SystemExit(f"unknown variant suffix @{recording} (known: @{MEMORY_HISTORY})")
    plan = variant_plan(variant, model_config(args.tiny).hidden_size)
    # Profiled steps (if any) run after the timed ones, so the profiler does not skew the timing.
    total_steps = args.steps + args.profile_steps if args.steps > 0 else -1
    ref = reference_arguments(tempfile.mkdtemp(prefix="bench-out-"), total_steps, args.tiny)
    model_kwargs, quant_kwargs, sft_kwargs = ref["model"], ref["quantization"], ref["sft"]
    if plan is not None:
        model_kwargs |= plan.model_kwargs
        quant_kwargs |= plan.quantization_kwargs
        sft_kwargs |= plan.sft_kwargs

    lengths = sample_lengths(max_len=TINY_MAX_LEN if args.tiny else MAX_LEN)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    vocab = model_config(args.tiny).vocab_size
    dataset = Dataset.from_dict({"input_ids": make_samples(lengths, vocab)})

    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(
        args.model_dir, quantization_config=BitsAndBytesConfig(**quant_kwargs), **model_kwargs
    )
    model.config.use_cache = False
    if plan is not None:
        model = plan.prepare_model(model)
    load_s = time.perf_counter() - t0
    load_peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None

    trainer = SFTTrainer(
        model=model,
        train_dataset=dataset,
        peft_config=LoraConfig(**ref["lora"]),
        processing_class=tokenizer,
        args=SFTConfig(**sft_kwargs),
    )
    if plan is not None:
        trainer = plan.prepare_trainer(trainer)
    window_edges = None if args.sync_every_step else {args.warmup, args.steps}
    clock = StepClock(window_edges)
    # Without a synchronize at every step end, the phases are the host's alone (wait ~0).
    phases = StepPhases(clock.sync if args.sync_every_step else lambda: None)
    phases.install(trainer)  # before the clock's callback: it measures the step end's wait
    trainer.add_callback(clock.callback)
    host_syncs = None
    if args.host_syncs and cuda:
        from bench.host_syncs import HostSyncRecorder

        host_syncs = HostSyncRecorder(first_step=args.warmup + 1, steps=args.host_syncs)
        host_syncs.install(trainer)
    counter = CountingCollator(trainer.data_collator)
    trainer.data_collator = counter

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    memory = None
    if recording and cuda:
        from bench import memory_at_peak

        before_gib = memory_at_peak.start_recording()
    profile = None
    if args.profile_window:  # the timed steps themselves: their timing is then not a measurement
        profile = _profiled_train(trainer, clock, args.warmup, args.steps - args.warmup)
    elif args.profile_steps:
        profile = _profiled_train(trainer, clock, args.steps, args.profile_steps)
    else:
        trainer.train()
    if recording and cuda:
        memory = memory_at_peak.stop_and_summarize(before_gib)

    steps_done = len(clock.times) - 1 - args.profile_steps
    w = min(args.warmup, steps_done - 1)
    timed = steps_done - w
    window = clock.times[steps_done] - clock.times[w]
    tokens = sum(counter.counts[w:steps_done])
    tps = tokens / window
    total_tokens = sum(lengths)
    result = {
        "variant": args.child,
        "card": torch.cuda.get_device_name() if cuda else "cpu",
        "tokens_per_s": round(tps, 1),
        "s_per_step": round(window / timed, 4),
        "timed_steps": f"{w + 1}..{steps_done}",
        "timed_tokens": tokens,
        "first_steps_s": [
            round(b - a, 3) for a, b in zip(clock.times[:w], clock.times[1 : w + 1], strict=True)
        ],
        "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3) if cuda else None,
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 3) if cuda else None,
        "load_peak_allocated_gib": round(load_peak, 3) if load_peak is not None else None,
        "load_s": round(load_s, 1),
        "final_loss": _last_loss(trainer),
        "host_ms_per_phase": phases.summary(w + 1, steps_done),
        "timing": "device synchronized at every step end"
        if args.sync_every_step
        else "device synchronized at the timed window's ends only",
        "notes": plan.notes if plan is not None else ["reference recipe as written"],
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "trl": trl.__version__,
            "bitsandbytes": bitsandbytes.__version__,
            "liger_kernel": _version("liger_kernel"),
            "triton": _version("triton"),
            "python": sys.version.split()[0],
        },
        "date": datetime.date.today().isoformat(),
    }
    if args.full_epoch:
        result["epoch_s"] = round(clock.times[-1] - clock.times[0], 1)
        result["epoch_steps"] = len(clock.times) - 1
    else:
        result["epoch_s_extrapolated"] = round(total_tokens / tps, 1)
    if profile:
        # The profiled steps' own batches: a short batch's step is not a typical one.
        if args.profile_window:
            profile["real_tokens_per_step"] = counter.counts[w:steps_done]
            result["timing"] = "profiled (--profile-window): not a measurement"
        else:
            profile["real_tokens_per_step"] = counter.counts[steps_done : steps_done + args.profile_steps]
        result["profile"] = profile
    if memory:
        result["memory_at_peak"] = memory
    if host_syncs is not None:
        result["host_syncs"] = host_syncs.summary()
    if plan is not None and plan.compile_layers:
        result["dynamo"] = _dynamo_counters()
    return result


def _dynamo_counters() -> dict:
    """How torch.compile went: graphs made, graph breaks (with reasons), recompiles."""
    from torch._dynamo.utils import counters

    return {
        "unique_graphs": counters["stats"].get("unique_graphs", 0),
        "calls_captured": counters["stats"].get("calls_captured", 0),
        "graph_breaks": dict(counters["graph_break"]),
        "recompiles": dict(counters["recompiles"]) if "recompiles" in counters else {},
    }


def _last_loss(trainer):
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return losses[-1] if losses else None


def _version(name: str):
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name.replace("_", "-"))
    except PackageNotFoundError:
        return None


def _fault_report(stderr: str) -> str | None:
    """faulthandler's report of a crash in native code: the crashing thread's stack first
    (the stderr tail is mostly its list of extension modules)."""
    start = stderr.find("Fatal Python error")
    if start < 0:
        return None
    end = stderr.find("Extension modules:", start)
    return stderr[start : end if end > 0 else start + 6000][:6000]


def _text(output) -> str:
    """A timed-out child's captured output (bytes, str or None) as text."""
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


def device_events(events) -> list:
    """The profiler's events that are the device's own work: kernels and copies.

    A CPU op's self device time repeats that of the kernels it launched, and a user
    annotation (the optimizer's "Optimizer.step#...") has a device-side span covering its
    kernels again: summing either with the kernels counts the same work twice.
    """
    from torch.autograd import DeviceType

    return [
        e
        for e in events
        if e.device_type == DeviceType.CUDA
        and e.self_device_time_total > 0
        and not getattr(e, "is_user_annotation", False)
    ]


def _profiled_train(trainer, clock, after_step: int, n: int) -> dict:
    """Train, profiling the n steps after step `after_step`: device busy time vs wall time,
    the top kernels and the top CPU ops. Tells launch-bound from compute-bound."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    from transformers import TrainerCallback

    state = {"prof": None}

    class _Prof(TrainerCallback):
        def on_step_end(self, a, s, c, **kw):
            if s.global_step == after_step:
                acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
                state["prof"] = profile(activities=acts)
                state["prof"].__enter__()
                state["t0"] = time.perf_counter()
            elif s.global_step == after_step + n and state["prof"] is not None:
                clock.sync()
                state["wall"] = time.perf_counter() - state["t0"]
                state["prof"].__exit__(None, None, None)

    trainer.add_callback(_Prof())
    trainer.train()
    prof = state["prof"]
    if prof is None:
        return {}
    events = prof.key_averages()
    from torch.autograd import DeviceType

    dev = device_events(events)
    ops = [e for e in events if e.device_type != DeviceType.CUDA and e.self_device_time_total > 0]
    busy_us = sum(e.self_device_time_total for e in dev)
    kernels = sum(e.count for e in dev)
    top_dev = sorted(dev, key=lambda e: -e.self_device_time_total)[:12]
    top_ops = sorted(ops, key=lambda e: -e.self_device_time_total)[:12]
    top_cpu = sorted(events, key=lambda e: -e.self_cpu_time_total)[:15]
    syncs = {
        e.key: e.count
        for e in events
        if e.key
        in (
            "cudaStreamSynchronize",
            "cudaDeviceSynchronize",
            "cudaMemcpyAsync",
            "aten::item",
            "aten::_local_scalar_dense",
        )
    }
    return {
        "steps": n,
        "wall_ms_per_step": round(1e3 * state["wall"] / n, 1),
        "device_busy_ms_per_step": round(busy_us / 1e3 / n, 1),
        "device_ops_per_step": round(kernels / n),
        "syncs_per_step": {k: round(v / n, 1) for k, v in syncs.items()},
        "top_device_ms_per_step": [
            [e.key[:80], round(e.self_device_time_total / 1e3 / n, 2), e.count // n] for e in top_dev
        ],
        "top_op_device_ms_per_step": [
            [e.key[:80], round(e.self_device_time_total / 1e3 / n, 2), e.count // n] for e in top_ops
        ],
        "top_cpu_self_ms_per_step": [
            [e.key[:80], round(e.self_cpu_time_total / 1e3 / n, 2), e.count // n] for e in top_cpu
        ],
    }


# -------------------------------------------------------------------- main ---


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default="reference,loraboard", help="comma-separated (see above)")
    p.add_argument("--steps", type=int, default=40, help="optimizer steps per variant")
    p.add_argument("--warmup", type=int, default=8, help="untimed steps before the timed ones")
    p.add_argument("--full-epoch", action="store_true", help="train a whole epoch (250 steps) per variant")
    p.add_argument("--tiny", action="store_true", help="tiny Llama config: a smoke test that runs on CPU")
    p.add_argument("--model-dir", help="reuse a saved model directory instead of building one")
    p.add_argument("--profile", default="", help="comma-separated variants to profile (torch.profiler)")
    p.add_argument("--profile-steps", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument(
        "--profile-window",
        action="store_true",
        help="profile the timed steps themselves (typical batches) instead of 3 steps after them",
    )
    p.add_argument("--out", help="write the results as a JSON list to this file (e.g. bench/results/x.json)")
    p.add_argument("--variant-timeout", type=float, default=None, help="seconds before a variant is given up")
    p.add_argument("--sync-every-step", action="store_true", help="synchronize the device at every step end")
    p.add_argument("--host-syncs", type=int, default=0, help="record host waits in N steps after warm-up")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.full_epoch:
        args.steps = -1

    if args.child:
        if args.steps < 0:
            args.steps = -1
        result = run_variant(args)
        print("BENCH_RESULT " + json.dumps(result), flush=True)
        return 0

    tmp = None
    model_dir = args.model_dir
    if model_dir is None:
        base = "/dev/shm" if Path("/dev/shm").is_dir() and not args.tiny else None
        tmp = tempfile.TemporaryDirectory(prefix="bench-model-", dir=base)
        model_dir = tmp.name
        build_model_dir(Path(model_dir), args.tiny)

    results = []
    profiled = set(filter(None, args.profile.split(",")))
    for variant in filter(None, args.variants.split(",")):
        cmd = [
            sys.executable,
            "-X",
            "faulthandler",  # a crash in native code (exit -11) still prints where Python was
            str(Path(__file__).resolve()),
            "--child",
            variant,
            "--model-dir",
            model_dir,
            "--steps",
            str(args.steps),
            "--warmup",
            str(args.warmup),
        ]
        if args.tiny:
            cmd.append("--tiny")
        if args.sync_every_step:
            cmd.append("--sync-every-step")
        if args.host_syncs:
            cmd += ["--host-syncs", str(args.host_syncs)]
        if args.full_epoch:
            cmd.append("--full-epoch")
        if variant in profiled:
            cmd += ["--profile-window"] if args.profile_window else ["--profile-steps", "3"]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.variant_timeout)
        except subprocess.TimeoutExpired as exc:
            proc = subprocess.CompletedProcess(cmd, -9, stdout=_text(exc.stdout), stderr=_text(exc.stderr))
        sys.stderr.write(proc.stderr)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_RESULT ")]
        if proc.returncode != 0 or not lines:
            result = {
                "variant": variant,
                "error": f"exit code {proc.returncode}",
                "stdout_tail": proc.stdout[-2000:],
                # the JSON keeps why: the call's log may be cut to its last lines
                "stderr_tail": proc.stderr[-4000:],
                "fault": _fault_report(proc.stderr),
            }
        else:
            result = json.loads(lines[-1].removeprefix("BENCH_RESULT "))
        result["process_s"] = round(time.perf_counter() - t0, 1)
        results.append(result)
        print(json.dumps(result), flush=True)
        if args.out:  # written after every variant: a later crash or time-out keeps the earlier ones
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(results, indent=1) + "\n")

    ok = [r for r in results if "tokens_per_s" in r]
    base = next((r for r in ok if r["variant"] == "reference"), None)
    print(
        f"{'variant':<22}{'tokens/s':>10}{'s/step':>9}{'peak alloc GiB':>16}{'reserved':>10}{'x ref':>7}",
        file=sys.stderr,
    )
    for r in results:
        if "tokens_per_s" not in r:
            print(f"{r['variant']:<22} FAILED {r.get('error')}", file=sys.stderr)
            continue
        speedup = f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}" if base else "-"
        print(
            f"{r['variant']:<22}{r['tokens_per_s']:>10}{r['s_per_step']:>9}{r['peak_allocated_gib']!s:>16}"
            f"{r['peak_reserved_gib']!s:>10}{speedup:>7}",
            file=sys.stderr,
        )
    if tmp is not None:
        tmp.cleanup()
    return 0 if len(ok) == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())

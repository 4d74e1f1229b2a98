"""What a run will cost before it starts: trainable parameters and a GPU memory estimate.

The shapes come from the model's config.json (the demo model, a local directory,
the Hugging Face cache) or, for the well-known hub models, from a small table, so
the form answers on an air-gapped box too. The arithmetic is docs/parameters.md's:

    LoRA parameters per adapted Linear(d_in -> d_out) = r (d_in + d_out)
    4-bit weights         N_linear x 0.5 bytes
    block scales          one fp32 per 64 weights = 0.5 bit per weight (0.127 bit nested)
    16-bit layers         embeddings, lm_head and norms stay in 16 bit: 2 bytes each
    adapters + optimizer  fp32 weight, gradient and two Adam moments: 16 bytes per LoRA parameter
    activations           grow with batch x sequence length; with gradient checkpointing
                          only each layer's input is kept (plus one layer during recompute)
    dequantized layer     Loraboard's compiled layers: one layer's weights in bf16
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

from app.config import get_settings
from app.services.hub_lookup import BackgroundLookups, LookupFailed, LookupPending
from app.services.sources import allowed_local_path, is_hub_reference
from core.acceleration_plan import GPU_PACKAGES, plan_acceleration
from core.model_catalog import DEMO_ARCHITECTURE, DEMO_TOKENIZER_VOCAB_SIZE
from core.run_config import DEMO_MODEL_ID, SMOLLM2_ID, RunConfig

GB = 1024**3
GPU_SIZES_GB = (24, 40, 80)
DEFAULT_SEQ_LEN = 1024  # trl's default max_length when max_seq_length is empty
# The CUDA context (~0.3-0.5 GB) and the caching allocator's slack: a fixed allowance.
CUDA_OVERHEAD_BYTES = int(0.8 * GB)
# The GPU the estimate assumes when it asks the fast path's planner: one with bfloat16 matmuls.
ESTIMATED_GPU_CAPABILITY = (9, 0)


@dataclass(frozen=True)
class ModelShape:
    """What the parameter and memory arithmetic needs from a decoder-only transformer."""

    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    vocab_size: int
    tie_word_embeddings: bool = False
    head_dim: int | None = None
    source: str = ""

    @property
    def attention_dim(self) -> int:
        return self.num_heads * (self.head_dim or self.hidden_size // self.num_heads)

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * (self.head_dim or self.hidden_size // self.num_heads)

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(d_in, d_out) of each Linear in one decoder layer (Llama/Mistral naming)."""
        h, i = self.hidden_size, self.intermediate_size
        return {
            "q_proj": (h, self.attention_dim),
            "k_proj": (h, self.kv_dim),
            "v_proj": (h, self.kv_dim),
            "o_proj": (self.attention_dim, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }


def _llama(h: int, i: int, layers: int, heads: int, kv: int, vocab: int, source: str) -> ModelShape:
    return ModelShape(h, i, layers, heads, kv, vocab, source=source)


_LLAMA2_7B = _llama(4096, 11008, 32, 32, 32, 32000, "built-in table: Llama-2-7B")
_LLAMA2_13B = _llama(5120, 13824, 40, 40, 40, 32000, "built-in table: Llama-2-13B")
_MISTRAL_7B = _llama(4096, 14336, 32, 32, 8, 32000, "built-in table: Mistral-7B")
_LLAMA3_8B = _llama(4096, 14336, 32, 32, 8, 128256, "built-in table: Llama-3-8B")
# The built-in real model: known before it is prepared into the cache.
_SMOLLM2_135M = ModelShape(576, 1536, 30, 9, 3, 49152, True, 64, "built-in table: SmolLM2-135M")

# Well-known hub ids, so the estimate works without a hub (keys are lower-cased).
KNOWN_SHAPES: dict[str, ModelShape] = {
    SMOLLM2_ID.lower(): _SMOLLM2_135M,
    **{
        name.lower(): _LLAMA2_7B
        for name in (
            "NousResearch/Llama-2-7b-chat-hf",
            "NousResearch/Llama-2-7b-hf",
            "meta-llama/Llama-2-7b-hf",
            "meta-llama/Llama-2-7b-chat-hf",
        )
    },
    **{
        name.lower(): _LLAMA2_13B
        for name in (
            "NousResearch/Llama-2-13b-chat-hf",
            "NousResearch/Llama-2-13b-hf",
            "meta-llama/Llama-2-13b-hf",
            "meta-llama/Llama-2-13b-chat-hf",
        )
    },
    **{
        name.lower(): _MISTRAL_7B
        for name in (
            "mistralai/Mistral-7B-v0.1",
            "mistralai/Mistral-7B-Instruct-v0.1",
            "mistralai/Mistral-7B-Instruct-v0.2",
        )
    },
    **{
        name.lower(): _LLAMA3_8B
        for name in (
            "meta-llama/Meta-Llama-3-8B",
            "meta-llama/Meta-Llama-3-8B-Instruct",
            "meta-llama/Llama-3.1-8B",
            "meta-llama/Llama-3.1-8B-Instruct",
            "NousResearch/Meta-Llama-3-8B",
            "NousResearch/Meta-Llama-3-8B-Instruct",
        )
    },
}

# peft's default targets for Llama-family models.
DEFAULT_TARGET_MODULES = ("q_proj", "v_proj")


class UnknownModel(LookupError):
    """The model's shape could not be found offline or on the hub."""


def shape_from_config(config: dict[str, Any], source: str) -> ModelShape:
    heads = config["num_attention_heads"]
    return ModelShape(
        hidden_size=config["hidden_size"],
        intermediate_size=config["intermediate_size"],
        num_layers=config["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=config.get("num_key_value_heads") or heads,
        vocab_size=config["vocab_size"],
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        head_dim=config.get("head_dim"),
        source=source,
    )


def model_shape(model_name: str) -> ModelShape:
    """The shape of a base model; UnknownModel when it cannot be found."""
    if model_name == DEMO_MODEL_ID:
        return _demo_shape()
    local = allowed_local_path(model_name)  # other paths are not read: they would leak what exists
    if local is not None and (local / "config.json").is_file():
        return shape_from_config(json.loads((local / "config.json").read_text()), f"{local}/config.json")
    known = KNOWN_SHAPES.get(model_name.lower())
    if known is not None:
        return known
    return _hub_shape(model_name)


def _demo_shape() -> ModelShape:
    built = get_settings().models_dir / DEMO_MODEL_ID / "config.json"
    if built.is_file():
        return shape_from_config(json.loads(built.read_text()), f"{DEMO_MODEL_ID} config.json")
    # Not built yet: the same architecture, vocabulary rounded up to 64 as the builder does.
    vocab = -(-DEMO_TOKENIZER_VOCAB_SIZE // 64) * 64
    return shape_from_config({**DEMO_ARCHITECTURE, "vocab_size": vocab}, f"{DEMO_MODEL_ID} architecture")


_HUB_CONFIGS = BackgroundLookups()


def _hub_shape(model_name: str) -> ModelShape:
    """AutoConfig from the local cache at once; else from the hub in the background (hub_lookup)."""
    if not is_hub_reference(model_name):
        raise UnknownModel(f"'{model_name}' is not a hub id, a built-in model or an allowed local directory")
    try:
        config = _cached_config(model_name)
    except OSError:  # not in the local cache: never wait for the hub inside a request
        try:
            config = _HUB_CONFIGS.get(model_name, lambda: _downloaded_config(model_name))
        except LookupPending:
            raise UnknownModel(
                f"looking '{model_name}' up on the hub; the estimate shows on the next change"
            ) from None
        except LookupFailed:
            raise UnknownModel(
                f"no config found for '{model_name}' (offline, or not a transformers model)"
            ) from None
    try:
        return shape_from_config(config, f"hub: {model_name}")
    except KeyError as error:
        raise UnknownModel(f"'{model_name}' is not a Llama-style decoder (missing {error})") from error


def _cached_config(model_name: str) -> dict[str, Any]:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(model_name, local_files_only=True).to_dict()
    except Exception as error:  # transformers raises OSError, ValueError, ... for a missing model
        raise OSError(str(error)) from error


def _downloaded_config(model_name: str) -> dict[str, Any]:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model_name).to_dict()


# --- trainable parameters ------------------------------------------------------------


def adapted_modules(shape: ModelShape, target_modules: list[str] | str | None) -> list[str]:
    """The per-layer Linear names that get adapters ('all-linear': every one but the head)."""
    names = list(shape.linear_shapes())
    if target_modules is None:
        return list(DEFAULT_TARGET_MODULES)
    if target_modules == "all-linear":
        return names
    return [name for name in target_modules if name in names]


def trainable_parameters(
    shape: ModelShape, lora_r: int, target_modules: list[str] | str | None
) -> dict[str, Any]:
    """Exact LoRA parameter count: sum over adapted Linears of r (d_in + d_out), times the layers."""
    linear = shape.linear_shapes()
    modules = adapted_modules(shape, target_modules)
    per_layer = {name: lora_r * (linear[name][0] + linear[name][1]) for name in modules}
    trainable = shape.num_layers * sum(per_layer.values())
    total = total_parameters(shape)
    return {
        "modules": modules,
        "per_layer": per_layer,
        "trainable": trainable,
        "base_total": total,
        "fraction": trainable / total if total else 0.0,
    }


def total_parameters(shape: ModelShape) -> int:
    return linear_parameters(shape) + sixteen_bit_parameters(shape)


def linear_parameters(shape: ModelShape) -> int:
    """The decoder layers' Linear weights: what bitsandbytes stores in 4 bit."""
    return shape.num_layers * sum(d_in * d_out for d_in, d_out in shape.linear_shapes().values())


def sixteen_bit_parameters(shape: ModelShape) -> int:
    """Embeddings, lm_head (unless tied) and the RMSNorm weights: left in 16 bit."""
    embeddings = shape.vocab_size * shape.hidden_size
    head = 0 if shape.tie_word_embeddings else embeddings
    norms = (2 * shape.num_layers + 1) * shape.hidden_size
    return embeddings + head + norms


# --- memory ----------------------------------------------------------------------------


def activation_bytes(shape: ModelShape, config: RunConfig) -> int:
    """Activations kept for the backward pass, a model for sdpa attention (no s x s scores).

    Per token and layer the forward keeps about 10 h + 4 i values (norm inputs and outputs,
    q/k/v, attention output, the MLP's gate, up, activation and product). With gradient
    checkpointing only each layer's input (h values) is kept, and one layer is recomputed
    at a time. The loss adds the fp32 logits: 4 bytes x vocabulary per token (the 16-bit
    logits and their gradient live only inside the loss). Checked against peaks measured
    on an H200 for the 7B and 13B shapes (bench/RESULTS.md, tests/app/services/test_estimates_measured.py).
    """
    tokens = config.per_device_train_batch_size * (config.max_seq_length or DEFAULT_SEQ_LEN)
    element = 4 if config.bnb_4bit_compute_dtype == "float32" and not (config.fp16 or config.bf16) else 2
    one_layer = tokens * (10 * shape.hidden_size + 4 * shape.intermediate_size) * element
    if config.gradient_checkpointing:
        layers = shape.num_layers * tokens * shape.hidden_size * element + one_layer
    else:
        layers = shape.num_layers * one_layer
    logits = tokens * shape.vocab_size * 4
    return layers + logits


def dequantized_layer_bytes(shape: ModelShape, config: RunConfig) -> int:
    """One decoder layer's Linear weights in bfloat16, where Loraboard's compiled layers hold them.

    The planner decides, for a CUDA GPU of compute capability 8.0 and up with the fast path's
    packages, whether this run's layers are compiled with their 4-bit weights dequantized in
    the graph. While such a layer is recomputed in the backward pass its weights live in
    bfloat16 for the input-gradient matmuls: one such layer is counted (docs/performance.md).
    """
    if config.trainer != "loraboard" or not config.use_4bit:
        return 0
    plan = plan_acceleration(
        "cuda",
        ESTIMATED_GPU_CAPABILITY,
        config.gradient_checkpointing,
        config.packing,
        hidden_size=shape.hidden_size,
        compute_dtype=config.bnb_4bit_compute_dtype,
        installed=GPU_PACKAGES,
    )
    return 2 * linear_parameters(shape) // shape.num_layers if plan.dequantize_in_graph else 0


def estimate_memory(shape: ModelShape, config: RunConfig, trainable: int) -> dict[str, Any]:
    """Bytes per component, their total, and a verdict for each common GPU size."""
    linear = linear_parameters(shape)
    if config.use_4bit:
        weights = linear // 2  # 4 bits = 0.5 byte per weight
        scale_bits = 0.127 if config.use_nested_quant else 0.5
        scales = math.ceil(linear * scale_bits / 8)
    else:
        weights, scales = linear * 2, 0  # a 16-bit base
    parts = [
        (
            "weights_4bit" if config.use_4bit else "weights_16bit",
            "Linear weights" + (" (4 bit)" if config.use_4bit else " (16 bit)"),
            weights,
        ),
        ("scales", "Block scales" + (" (nested)" if config.use_nested_quant else ""), scales),
        ("sixteen_bit", "Embeddings, head and norms (16 bit)", sixteen_bit_parameters(shape) * 2),
        ("adapters", "LoRA weights, gradients and Adam states (16 B each)", trainable * 16),
        (
            "activations",
            "Activations" + (" (checkpointed)" if config.gradient_checkpointing else ""),
            activation_bytes(shape, config),
        ),
        ("overhead", "CUDA context and allocator slack", CUDA_OVERHEAD_BYTES),
    ]
    dequantized = dequantized_layer_bytes(shape, config)
    if dequantized:  # a line only where the compiled layers run
        parts.insert(-1, ("dequantized", "One layer's weights dequantized (compiled layers)", dequantized))
    total = sum(value for _, _, value in parts)
    return {
        "parts": [
            {"key": key, "label": label, "bytes": value, "gb": value / GB} for key, label, value in parts
        ],
        "total_bytes": total,
        "total_gb": total / GB,
        "verdicts": [verdict(total, size) for size in GPU_SIZES_GB],
    }


def verdict(total_bytes: int, gpu_gb: float, name: str | None = None) -> dict[str, Any]:
    """fits: 10 % headroom left; tight: fits on paper, fragmentation may not; no: out of memory."""
    capacity = gpu_gb * GB
    if total_bytes <= 0.9 * capacity:
        status = "fits"
    elif total_bytes <= capacity:
        status = "tight"
    else:
        status = "no"
    return {
        "name": name or f"{gpu_gb:g} GB GPU",
        "gb": gpu_gb,
        "status": status,
        "headroom_gb": (capacity - total_bytes) / GB,
    }


@dataclass
class Estimate:
    shape: ModelShape | None
    shape_error: str | None
    params: dict[str, Any] | None
    memory: dict[str, Any] | None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "shape": asdict(self.shape) if self.shape else None}


def estimate_run(config: RunConfig) -> Estimate:
    """Trainable parameters and memory for a config; the shape error instead when the model is unknown."""
    try:
        shape = model_shape(config.model_name)
    except UnknownModel as error:
        return Estimate(None, str(error), None, None)
    params = trainable_parameters(shape, config.lora_r, config.target_modules)
    return Estimate(shape, None, params, estimate_memory(shape, config, params["trainable"]))

"""Chat completions with a base model and, optionally, a trained adapter.

The prompt is rendered by data.render_chat_prompt with the adapter's saved
tokenizer, so the model sees exactly the format it was trained on. The base is
loaded once (4-bit like in training) and kept; adapters are attached by name with
peft's PeftModel (load_adapter / set_adapter) and switched per call, so repeated calls cost only
the generation. A lock serialises calls: one worker process (concurrency 1)
serves one request at a time anyway.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from worker.training.arguments import detect_device, quantization_kwargs
from worker.training.cpu_4bit_layout import restore_plain_layout
from worker.training.data import render_chat_prompt
from worker.training.model_loading import load_base_model, load_tokenizer
from worker.training.model_sources import resolve_model

MAX_ADAPTERS = 8  # attached adapters kept per base; the least recently used is dropped beyond that

_lock = threading.Lock()
_base: dict[str, Any] = {"key": None, "model": None, "peft": None}  # peft: the base wrapped with adapters
_adapters: OrderedDict[str, str] = OrderedDict()  # adapter dir -> adapter name, least recent first
_tokenizers: dict[str, Any] = {}


def generate_chat(
    base_model: str,
    adapter_dir: str | None,
    messages: list[dict],
    *,
    models_dir: Path,
    use_4bit: bool,
    quantization: dict,
    max_tokens: int = 256,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = None,
    stop: list[str] | None = None,
    logprobs: bool = False,
    top_logprobs: int = 0,
    on_piece: Callable[[dict], None] | None = None,
) -> dict:
    """{"content", "finish_reason" ("stop" | "length"), "prompt_tokens", "completion_tokens",
    "pieces", "logprobs"}.

    quantization: bnb_4bit_compute_dtype, bnb_4bit_quant_type, use_nested_quant (the run config's names).
    temperature 0 = greedy decoding. on_piece receives each piece of text as soon as it is final
    (worker/training/token_stream.py); logprobs: each token's log-probability and its top_logprobs rivals.
    """
    import torch

    from worker.training.token_stream import LogprobRecorder, TokenStream

    with _lock:
        base_path = resolve_model(base_model, models_dir)
        model = _load_base(base_path, use_4bit, quantization)
        tokenizer = _tokenizer(adapter_dir or base_path)
        model, adapter_context = _use_adapter(model, adapter_dir)

        prompt = render_chat_prompt(messages, tokenizer)
        inputs = tokenizer(prompt, return_tensors="pt").to(model.device)
        recorder = LogprobRecorder() if logprobs else None
        stream = TokenStream(
            tokenizer, stop=stop, recorder=recorder, top_logprobs=top_logprobs, on_piece=on_piece
        )
        generation: dict[str, Any] = {
            "max_new_tokens": max_tokens,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "streamer": stream,
        }
        if recorder is not None:
            generation["logits_processor"] = [recorder]
        if temperature > 0:
            generation.update(do_sample=True, temperature=temperature, top_p=top_p)
        else:
            generation.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if stop:
            generation.update(stop_strings=list(stop), tokenizer=tokenizer)
        if seed is not None:
            torch.manual_seed(seed)
        with adapter_context, torch.inference_mode():
            output = model.generate(**inputs, **generation)

    new_tokens = output[0, inputs["input_ids"].shape[1] :].tolist()
    ended_on_eos = bool(new_tokens) and new_tokens[-1] == tokenizer.eos_token_id
    return {
        "content": stream.content,
        "finish_reason": "stop" if ended_on_eos or stream.stopped_on_string else "length",
        "prompt_tokens": int(inputs["input_ids"].shape[1]),
        "completion_tokens": len(new_tokens),
        "pieces": stream.pieces,
        "logprobs": [entry for piece in stream.pieces for entry in piece["logprobs"]] if logprobs else None,
    }


def _load_base(base_path: str, use_4bit: bool, quantization: dict) -> Any:
    """The cached base model; reloaded only when the base or its quantization changes."""
    device = detect_device()
    bnb, compute_dtype = quantization_kwargs(
        use_4bit,
        quantization.get("bnb_4bit_compute_dtype", "float16"),
        quantization.get("bnb_4bit_quant_type", "nf4"),
        bool(quantization.get("use_nested_quant", quantization.get("bnb_4bit_use_double_quant", False))),
        device,
    )
    key = repr((base_path, bnb))
    if _base["key"] != key:
        _base.update(key=None, model=None, peft=None)
        _adapters.clear()
        on_cpu = device.type != "cuda"
        model_kwargs = {
            "device_map": {"": "cpu"} if on_cpu else {"": 0},
            "dtype": "float32" if on_cpu else compute_dtype,
        }
        model = load_base_model(base_path, bnb, model_kwargs)
        model.eval()
        _base.update(key=key, model=model)
    return _base["model"]


def _use_adapter(model: Any, adapter_dir: str | None) -> tuple[Any, Any]:
    """The model to generate with and the context to generate in: the adapter active, or none.

    peft's PeftModel holds every attached adapter by name (transformers' own adapter
    API needs a newer peft than the one pinned).
    """
    from peft import PeftModel

    if adapter_dir is None:
        # Once wrapped, the LoRA layers are in the base: switch them off for a bare-base answer.
        wrapped = _base.get("peft")
        return (
            (wrapped, wrapped.disable_adapter()) if wrapped is not None else (model, contextlib.nullcontext())
        )
    key = str(Path(adapter_dir).resolve())
    wrapped = _base["peft"]
    if key not in _adapters:
        # peft reads the base's state_dict while it attaches: the CPU-packed weights must be
        # in their plain layout first (cpu_4bit_layout), or every later answer is gibberish.
        restore_plain_layout(model)
        if len(_adapters) >= MAX_ADAPTERS:
            _, oldest = _adapters.popitem(last=False)
            wrapped.delete_adapter(oldest)
        name = "adapter_" + hashlib.sha1(key.encode()).hexdigest()[:12]
        if wrapped is None:
            wrapped = PeftModel.from_pretrained(model, key, adapter_name=name, is_trainable=False)
            _base["peft"] = wrapped
        else:
            wrapped.load_adapter(key, adapter_name=name, is_trainable=False)
        _adapters[key] = name
    _adapters.move_to_end(key)
    wrapped.set_adapter(_adapters[key])
    wrapped.eval()
    return wrapped, contextlib.nullcontext()


def _tokenizer(path: str) -> Any:
    if path not in _tokenizers:
        _tokenizers[path] = load_tokenizer(path)
    return _tokenizers[path]


def clear_cache() -> None:
    """Forget the loaded base, adapters and tokenizers (tests; a worker freeing memory)."""
    with _lock:
        _base.update(key=None, model=None, peft=None)
        _adapters.clear()
        _tokenizers.clear()

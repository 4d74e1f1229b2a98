"""The demo model: built deterministically, loadable in 4 bit, with a tokenizer for any text."""

from __future__ import annotations

import hashlib

from core.run_config import DEMO_MODEL_ID
from worker.training.demo_model import ensure_demo_model
from worker.training.model_sources import resolve_model


def digests(directory) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(directory.iterdir())}


def test_built_twice_gives_identical_files(models_dir, tmp_path):
    again = ensure_demo_model(tmp_path)
    first = digests(models_dir / DEMO_MODEL_ID)
    assert first == digests(again)
    assert {"model.safetensors", "tokenizer.json", "config.json", "README.md"} <= set(first)
    assert "Random weights, built locally by Loraboard" in (again / "README.md").read_text()
    assert ensure_demo_model(tmp_path) == again  # built once, then reused
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".")]  # no staging left


def test_resolve_model(models_dir):
    assert resolve_model(DEMO_MODEL_ID, models_dir) == str(models_dir / DEMO_MODEL_ID)
    assert resolve_model(str(models_dir / DEMO_MODEL_ID), models_dir) == str(models_dir / DEMO_MODEL_ID)


def test_tokenizer_encodes_any_text_with_special_tokens(models_dir):
    from transformers import PreTrainedTokenizerFast

    from worker.training.model_loading import load_tokenizer

    tokenizer = load_tokenizer(str(models_dir / DEMO_MODEL_ID))
    assert isinstance(tokenizer, PreTrainedTokenizerFast)
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ("<s>", "</s>", "<pad>")
    text = "Héllo wörld 日本 🙂 [INST] opposite of hot"
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert len(tokenizer(" cold", add_special_tokens=False)["input_ids"]) == 1  # demo words are single tokens


def test_loads_in_4bit_and_every_linear_is_quantizable(models_dir):
    import bitsandbytes as bnb
    import torch

    from worker.training.model_loading import load_base_model

    quantization = {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": "float32"}
    model = load_base_model(str(models_dir / DEMO_MODEL_ID), quantization, {"device_map": {"": "cpu"}})
    linears = [module for module in model.modules() if isinstance(module, bnb.nn.Linear4bit)]
    assert len(linears) == 7 * model.config.num_hidden_layers
    assert all(module.in_features % 64 == 0 for module in linears)
    with torch.no_grad():
        logits = model(torch.tensor([[1, 100, 200]])).logits
    assert logits.shape == (1, 3, model.config.vocab_size) and torch.isfinite(logits).all()


def test_building_leaves_the_random_state_of_the_caller_alone(tmp_path):
    """A run that builds the demo model on first use must draw the same LoRA init, with the
    same seed, as a run that finds it built (bench/compare_paths.py's first run did not)."""
    import torch

    torch.manual_seed(1234)
    expected = torch.rand(4)
    torch.manual_seed(1234)
    ensure_demo_model(tmp_path)
    assert torch.equal(torch.rand(4), expected)

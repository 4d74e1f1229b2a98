"""At submission, a base model that cannot load is refused with a 400 that says why."""

from __future__ import annotations

import pytest

from app.errors import APIError
from app.services.model_availability import check_model_available
from tests.hub_server import GATED_MODEL, SERVED_MODEL
from worker.training.hub_cache import install_snapshot


def refusal(model: str) -> APIError:
    with pytest.raises(APIError) as raised:
        check_model_available(model)
    assert raised.value.status_code == 400 and raised.value.param == "model"
    return raised.value


def test_built_in_and_cached_models_pass(private_hf_cache, smollm2):
    check_model_available("demo-tiny-llama")
    check_model_available("HuggingFaceTB/SmolLM2-135M-Instruct")
    install_snapshot(smollm2, private_hf_cache, "acme/smol-chat", "c" * 40)
    check_model_available("acme/smol-chat")
    check_model_available(str(smollm2))  # a model directory


def test_what_cannot_load_is_refused_at_once(private_hf_cache, tmp_path, monkeypatch):
    from huggingface_hub import constants

    assert "the hub cannot be reached" in refusal("acme/never-downloaded").message
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert "HF_HUB_OFFLINE is set" in refusal("acme/never-downloaded").message
    assert "is not a hub model id" in refusal("not a model id!").message
    assert "neither a built-in model" in refusal(str(tmp_path)).message  # a directory without config.json


def test_the_hub_says_unknown_or_gated(loopback_hub):
    check_model_available(SERVED_MODEL)  # on the hub, not cached: the worker downloads it
    unknown = refusal("acme/no-such-model")
    assert unknown.code == "model_not_found" and "No model 'acme/no-such-model' on the hub" in unknown.message
    gated = refusal(GATED_MODEL)
    assert gated.code == "model_gated" and "LORABOARD_HF_TOKEN" in gated.message

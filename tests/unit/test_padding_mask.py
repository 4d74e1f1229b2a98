"""worker/training/padding_mask.py: SDPA with transformers' mask, built without host reads."""

from __future__ import annotations

import pytest
import torch

from tests.compiled_layers_support import VOCAB, save_random_llama
from worker.training import padding_mask


def _model(tmp_path, attention: str):
    from transformers import LlamaForCausalLM

    path = save_random_llama(tmp_path / "llama")
    return LlamaForCausalLM.from_pretrained(path, attn_implementation=attention).eval()


@pytest.mark.parametrize("padded", [True, False])
def test_the_same_logits_as_transformers_sdpa(tmp_path, monkeypatch, padded: bool) -> None:
    import transformers.masking_utils

    model = _model(tmp_path, "sdpa")
    input_ids = torch.randint(0, VOCAB, (3, 9), generator=torch.Generator().manual_seed(1))
    attention_mask = torch.ones_like(input_ids)
    if padded:
        attention_mask[1, 6:] = 0
        attention_mask[2, 2:] = 0
    expected = model(input_ids=input_ids, attention_mask=attention_mask).logits

    assert padding_mask.use_mask_without_host_checks(model)
    assert model.config._attn_implementation == padding_mask.ATTENTION
    checked = []
    monkeypatch.setattr(
        transformers.masking_utils, "fast_all", lambda tensor: checked.append(1) or tensor.all()
    )
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    assert checked == []  # no padding check: it reads the mask on the host
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


def test_other_attentions_are_left_alone(tmp_path) -> None:
    model = _model(tmp_path, "eager")
    assert not padding_mask.use_mask_without_host_checks(model)
    assert model.config._attn_implementation == "eager"

"""worker/training/acceleration/padding_mask.py: SDPA with transformers' mask, built without host reads."""

from __future__ import annotations

import pytest
import torch

from tests.tiny_llama import VOCAB
from tests.training_support import sdpa_calls
from worker.training.acceleration import padding_mask


def _model(tiny_llama_dir, attention: str):
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(tiny_llama_dir, attn_implementation=attention).eval()


@pytest.mark.parametrize("padded", [True, False])
def test_the_same_logits_as_transformers_sdpa(tiny_llama_dir, monkeypatch, padded: bool) -> None:
    import transformers.masking_utils

    model = _model(tiny_llama_dir, "sdpa")
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


def test_other_attentions_are_left_alone(tiny_llama_dir) -> None:
    model = _model(tiny_llama_dir, "eager")
    assert not padding_mask.use_mask_without_host_checks(model)
    assert model.config._attn_implementation == "eager"


def _right_padded_batch():
    input_ids = torch.randint(0, VOCAB, (3, 9), generator=torch.Generator().manual_seed(3))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 6:] = 0
    attention_mask[2, 2:] = 0
    labels = input_ids.masked_fill(attention_mask == 0, padding_mask.IGNORE_INDEX)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def test_which_batches_are_right_padded() -> None:
    batch = _right_padded_batch()
    assert padding_mask.is_right_padded(batch)
    assert padding_mask.is_right_padded({**batch, "attention_mask": torch.ones(3, 9, dtype=torch.long)})
    left = {**batch, "attention_mask": batch["attention_mask"].flip(-1)}
    assert not padding_mask.is_right_padded(left)  # generation's padding side
    labelled_padding = {**batch, "labels": batch["input_ids"]}
    assert not padding_mask.is_right_padded(labelled_padding)  # a padded position would train
    assert not padding_mask.is_right_padded(
        {**batch, "position_ids": torch.arange(9).expand(3, 9)}
    )  # packed rows
    assert not padding_mask.is_right_padded({"input_ids": batch["input_ids"]})
    assert not padding_mask.is_right_padded({**batch, "attention_mask": batch["attention_mask"] * 2})
    assert not padding_mask.is_right_padded({**batch, "attention_mask": batch["attention_mask"].tolist()})
    assert not padding_mask.is_right_padded({**batch, "labels": batch["labels"].tolist()})


def test_right_padded_batches_get_causal_attention_and_the_same_real_outputs(
    tiny_llama_dir, monkeypatch
) -> None:
    model = _model(tiny_llama_dir, "sdpa")
    assert padding_mask.use_mask_without_host_checks(model)
    batch = _right_padded_batch()
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    masked = model(**inputs).logits

    calls = sdpa_calls(monkeypatch)
    with padding_mask.causal_attention_for_right_padding():
        causal = model(**inputs).logits
    assert calls and all(mask is None and is_causal for mask, is_causal in calls)
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(causal[real], masked[real], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(causal[~real], masked[~real])  # padding's own outputs: nobody reads them

    calls.clear()
    with padding_mask.causal_attention_for_right_padding(False):
        model(**inputs)
    assert calls and all(mask is not None for mask, _ in calls)  # not right-padded: the mask
    calls.clear()
    model(**inputs)
    assert calls and all(mask is not None for mask, _ in calls)  # outside the block: the mask


def test_other_mask_functions_keep_their_mask() -> None:
    from transformers.masking_utils import sliding_window_causal_mask_function

    kwargs = {
        "batch_size": 1,
        "q_length": 4,
        "kv_length": 4,
        "attention_mask": torch.ones(1, 4, dtype=torch.bool),
    }
    with padding_mask.causal_attention_for_right_padding():
        assert padding_mask.sdpa_mask_without_host_checks(**kwargs) is None
        windowed = {**kwargs, "mask_function": sliding_window_causal_mask_function(2)}
        assert padding_mask.sdpa_mask_without_host_checks(**windowed) is not None
        assert (
            padding_mask.sdpa_mask_without_host_checks(**{**kwargs, "kv_length": 6, "kv_offset": 2})
            is not None
        )
        assert (
            padding_mask.sdpa_mask_without_host_checks(**{**kwargs, "allow_is_causal_skip": False})
            is not None
        )

"""Rendering samples for training, and the same prompt for chat."""

from __future__ import annotations

from core.run_config import DEMO_MODEL_ID
from worker.training.data import render_chat_prompt, render_examples


def tokenizer_of(models_dir):
    from worker.training.model_loading import load_tokenizer

    return load_tokenizer(str(models_dir / DEMO_MODEL_ID))


def test_llama2_template_single_and_multi_turn(models_dir):
    tokenizer = tokenizer_of(models_dir)
    chat = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Opposite of hot?"},
        {"role": "assistant", "content": "cold"},
    ]
    (example,) = render_examples([{"messages": chat}], "messages", tokenizer)
    # The tokenizer adds <s> itself, so the first one is not in the text (no double BOS).
    assert example["prompt"] == (
        "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello </s><s>[INST] Opposite of hot? [/INST]"
    )
    assert example["completion"] == " cold </s>"
    assert render_chat_prompt(chat[:-1], tokenizer) == example["prompt"]  # chat sees the training format
    ids = tokenizer(example["prompt"])["input_ids"]
    assert ids.count(tokenizer.bos_token_id) == 2 and ids[0] == tokenizer.bos_token_id


def test_chat_template_is_used_when_the_tokenizer_has_one(models_dir):
    tokenizer = tokenizer_of(models_dir)
    tokenizer.chat_template = (
        "{{ bos_token }}{% for m in messages %}"
        "<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    (example,) = render_examples([{"messages": chat}], "messages", tokenizer)
    assert example == {"prompt": "<|user|>Hi</s><|assistant|>", "completion": "Hello</s>"}


def test_other_formats(models_dir):
    tokenizer = tokenizer_of(models_dir)
    rows = render_examples(
        [{"instruction": "Add.", "input": "2 and 2", "output": "4"}], "instruction", tokenizer
    )
    assert rows[0]["prompt"].endswith("### Instruction:\nAdd.\n\n### Input:\n2 and 2\n\n### Response:\n")
    assert rows[0]["completion"] == "4"
    rows = render_examples(
        [{"instruction": "Say hi.", "input": "", "output": "hi"}], "instruction", tokenizer
    )
    assert "### Input" not in rows[0]["prompt"]
    assert render_examples([{"text": "t", "extra": 1}], "text", tokenizer) == [{"text": "t"}]
    assert render_examples([{"prompt": "p", "completion": "c"}], "prompt_completion", tokenizer) == [
        {"prompt": "p", "completion": "c"}
    ]


def test_a_local_dataset_directory_loads_with_its_splits(tmp_path):
    """A directory in the hub's layout (what `datasets` reads for hub ids too), offline."""
    import pandas as pd

    from worker.training.data import load_records

    folder = tmp_path / "my-dataset" / "data"
    folder.mkdir(parents=True)
    pd.DataFrame({"prompt": ["2+2=", "3+3="], "completion": ["4", "6"]}).to_parquet(
        folder / "train-00000-of-00001.parquet"
    )
    pd.DataFrame({"prompt": ["1+1="], "completion": ["2"]}).to_parquet(
        folder / "validation-00000-of-00001.parquet"
    )
    train, summary = load_records(str(tmp_path / "my-dataset"))
    assert summary.format == "prompt_completion" and summary.num_samples == 2
    assert train[0] == {"prompt": "2+2=", "completion": "4"}
    validation, _ = load_records(str(tmp_path / "my-dataset"), split="validation")
    assert validation == [{"prompt": "1+1=", "completion": "2"}]


def test_guanaco_text_trains_with_one_bos_and_its_own_eos(models_dir, tmp_path):
    """mlabonne/guanaco-llama2-1k's shape: a `text` column of whole Llama-2 chats, <s> and </s> written
    out. Llama-2's tokenizer adds <s> itself, so the text's own <s> must not become a second BOS, and
    the text's </s> is the EOS (no second one appended)."""
    from tokenizers.processors import TemplateProcessing
    from trl import SFTConfig, SFTTrainer

    from core.run_config import RunConfig
    from tests.training_support import write_jsonl
    from worker.training.data import build_datasets

    llama2_like = tokenizer_of(models_dir)
    bos, eos = llama2_like.bos_token_id, llama2_like.eos_token_id
    llama2_like.backend_tokenizer.post_processor = TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    llama2_like.save_pretrained(tmp_path / "tokenizer")
    from worker.training.model_loading import load_tokenizer

    tokenizer = load_tokenizer(str(tmp_path / "tokenizer"))
    assert tokenizer("hello")["input_ids"][0] == bos  # it does add BOS, as Llama-2's does

    data = write_jsonl(
        tmp_path / "guanaco.jsonl",
        [
            {"text": "<s>[INST] What is the opposite of hot? [/INST] Cold. </s>"},
            {"text": "<s>[INST] Name a colour. [/INST] Blue is a colour. </s>"},
        ],
    )
    config = RunConfig(model_name=str(models_dir / DEMO_MODEL_ID), dataset=str(data))
    train, _, summary = build_datasets(str(data), None, config, tokenizer)
    assert summary.format == "text"

    from transformers import AutoModelForCausalLM

    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(str(models_dir / DEMO_MODEL_ID)),
        args=SFTConfig(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none", max_length=64),
        train_dataset=train,
        processing_class=tokenizer,
    )
    for row in trainer.train_dataset:
        ids = row["input_ids"]
        assert ids[0] == bos and ids.count(bos) == 1, tokenizer.convert_ids_to_tokens(ids)
        assert ids[-1] == eos and ids.count(eos) == 1, tokenizer.convert_ids_to_tokens(ids)
        assert tokenizer.decode(ids[1:-1]).strip().startswith("[INST]")

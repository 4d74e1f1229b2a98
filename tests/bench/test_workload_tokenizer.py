"""bench/workload.py: the whole-run's text samples come through the worker's data pipeline and
trl's tokenization at exactly the lengths docs/workload.md draws."""

from __future__ import annotations

from bench.workload import (
    make_text_tokenizer,
    make_tokenizer,
    model_config,
    sample_lengths,
    save_whitespace_tokenizer,
    write_text_dataset,
)


def test_text_reads_as_the_ids_it_names(tmp_path) -> None:
    from transformers import AutoTokenizer, LlamaConfig

    LlamaConfig(vocab_size=500).save_pretrained(tmp_path)
    make_tokenizer(500).save_pretrained(tmp_path)  # the throughput bench's: pre-tokenized data only
    assert len(AutoTokenizer.from_pretrained(tmp_path)("t17 t40 t499")["input_ids"]) < 3

    save_whitespace_tokenizer(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert tokenizer("t17 t40 t499", add_special_tokens=False)["input_ids"] == [17, 40, 499]
    assert tokenizer("t17 t40</s>")["input_ids"] == [17, 40, 2]  # trl's appended EOS splits off
    assert tokenizer.pad_token == tokenizer.eos_token == "</s>"


def test_each_text_sample_trains_as_many_real_tokens_as_its_drawn_length(tmp_path) -> None:
    from transformers import LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer

    from core.run_config import RunConfig
    from worker.training.data import build_datasets
    from worker.training.model_loading import load_tokenizer

    lengths = sample_lengths(40)  # up to 1024 tokens: the real draws, not the tiny cap
    config = model_config(tiny=True)
    make_text_tokenizer(config.vocab_size).save_pretrained(tmp_path)
    data = tmp_path / "samples.jsonl"
    assert write_text_dataset(data, lengths, config.vocab_size) == sum(lengths)

    tokenizer = load_tokenizer(str(tmp_path))
    run = RunConfig(model_name=str(tmp_path), dataset=str(data), dataset_format="text", max_seq_length=1024)
    train, _, summary = build_datasets(str(data), None, run, tokenizer)
    assert summary.format == "text" and summary.num_samples == len(lengths)
    trainer = SFTTrainer(
        model=LlamaForCausalLM(config),
        args=SFTConfig(output_dir=str(tmp_path / "out"), max_length=1024, use_cpu=True, report_to="none"),
        train_dataset=train,
        processing_class=tokenizer,
    )
    ids = trainer.train_dataset["input_ids"]
    assert [len(sample) for sample in ids] == lengths
    assert all(sample[-1] == tokenizer.eos_token_id for sample in ids)
    assert not any(tokenizer.unk_token_id in sample for sample in ids)

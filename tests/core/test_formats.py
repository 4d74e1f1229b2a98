"""Dataset formats: detection, and refusals that point at the right line."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.formats import (
    FORMATS,
    DatasetError,
    read_records,
    validate_file,
    validate_records,
)

SAMPLES = {
    "text": {"text": "<s>[INST] Hi [/INST] Hello </s>"},
    "prompt_completion": {"prompt": "2+2=", "completion": "4"},
    "messages": {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
        ]
    },
    "instruction": {"instruction": "Add.", "input": "2 and 2", "output": "4"},
}


def write_jsonl(path, rows):
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def lines_of(error: DatasetError) -> list[int]:
    return [item.line for item in error.errors]


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("extension", [".jsonl", ".json", ".csv", ".parquet"])
def test_each_format_is_detected_in_each_file_type(tmp_path, name, extension):
    rows = [SAMPLES[name]] * 3
    path = tmp_path / f"data{extension}"
    if extension == ".jsonl":
        write_jsonl(path, rows)
    elif extension == ".json":
        path.write_text(json.dumps(rows, indent=2))
    elif extension == ".csv":
        import csv

        with path.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(rows[0]))
            writer.writeheader()
            for row in rows:
                writer.writerow(
                    {
                        key: json.dumps(value) if isinstance(value, list) else value
                        for key, value in row.items()
                    }
                )
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    summary = validate_file(path)
    assert (summary.format, summary.num_samples) == (name, 3)
    assert summary.columns == list(SAMPLES[name])


def test_instruction_input_is_optional_and_declared_format_is_enforced():
    assert validate_records([{"instruction": "Say hi.", "output": "hi"}]).format == "instruction"
    with pytest.raises(DatasetError) as raised:
        validate_records([SAMPLES["text"]], declared_format="prompt_completion")
    assert "missing field 'prompt'" in str(raised.value)


def test_malformed_jsonl_reports_every_bad_line(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [SAMPLES["text"], "{not json", "", "[1, 2]", SAMPLES["text"]])
    with pytest.raises(DatasetError) as raised:
        read_records(path)
    assert lines_of(raised.value) == [2, 4]
    assert "line 2: invalid JSON" in str(raised.value)
    assert "line 4: expected a JSON object, found a list" in str(raised.value)


def test_field_problems_keep_file_line_numbers_across_blank_lines(tmp_path):
    rows = [
        SAMPLES["prompt_completion"],
        "",
        {"prompt": "x", "completion": ""},
        {"prompt": 3, "completion": "y"},
    ]
    path = write_jsonl(tmp_path / "fields.jsonl", rows)
    with pytest.raises(DatasetError) as raised:
        validate_file(path)
    assert [(e.line, e.message) for e in raised.value.errors] == [
        (3, "field 'completion' is empty"),
        (4, "field 'prompt' must be a string, found a number"),
    ]


def test_mixed_formats_and_bad_chats_are_refused_with_lines(tmp_path):
    rows = [
        SAMPLES["messages"],
        SAMPLES["text"],
        {"messages": [{"role": "user", "content": "hi"}]},
        {"messages": [{"role": "bot", "content": "hi"}, {"role": "assistant", "content": "x"}]},
        {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
        {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "  "}]},
        {"foo": 1},
    ]
    with pytest.raises(DatasetError) as raised:
        validate_file(write_jsonl(tmp_path / "chat.jsonl", rows))
    messages = {e.line: e.message for e in raised.value.errors}
    assert sorted(messages) == [2, 3, 4, 5, 6, 7]
    assert "format 'text'" in messages[2] and "line 1" in messages[2]
    assert "must end with an assistant message" in messages[3]
    assert "role 'bot'" in messages[4]
    assert "expected role 'assistant', found 'user'" in messages[5]
    assert "'content' is empty" in messages[6]
    assert "no known format" in messages[7]


def test_malformed_csv_points_at_file_lines(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text('prompt,completion\n"a","b"\n"only one"\n"x","y","z"\n"multi\nline",""\n')
    with pytest.raises(DatasetError) as raised:
        read_records(path)
    assert lines_of(raised.value) == [3, 4]
    with pytest.raises(DatasetError) as raised:
        validate_records(read_records(_rewrite(path, 'prompt,completion\n"a","b"\n"multi\nline",""\n')))
    assert [(e.line, e.message) for e in raised.value.errors] == [(3, "field 'completion' is empty")]


def _rewrite(path, text):
    path.write_text(text)
    return path


def test_parquet_rows_and_broken_file(tmp_path):
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist([{"text": "ok"}, {"text": None}, {"text": "ok"}, {"text": ""}]), path)
    with pytest.raises(DatasetError) as raised:
        validate_file(path)
    assert lines_of(raised.value) == [2, 4]
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really")
    with pytest.raises(DatasetError, match="not a readable Parquet file"):
        read_records(broken)


def test_json_array_reports_element_lines(tmp_path):
    path = tmp_path / "data.json"
    path.write_text('[\n  {"text": "a"},\n  {"text": ""},\n  42\n]\n')
    with pytest.raises(DatasetError) as raised:
        validate_file(path)
    assert lines_of(raised.value) == [4]
    path.write_text('[\n  {"text": "a"},\n  {"text": ""}\n]\n')
    with pytest.raises(DatasetError) as raised:
        validate_file(path)
    assert lines_of(raised.value) == [3]
    path.write_text('[\n  {"text": "a"},\n  {"text": \n')
    with pytest.raises(DatasetError, match="invalid JSON"):
        read_records(path)


@pytest.mark.parametrize("extension", [".jsonl", ".json", ".csv"])
def test_empty_files_are_refused(tmp_path, extension):
    path = tmp_path / f"empty{extension}"
    path.write_text("\n" if extension != ".csv" else "text\n")
    with pytest.raises(DatasetError, match="empty"):
        validate_file(path)


def test_unsupported_extension_and_long_error_lists(tmp_path):
    with pytest.raises(DatasetError, match="unsupported file type"):
        read_records(tmp_path / "data.txt")
    with pytest.raises(DatasetError) as raised:
        validate_records([{"text": ""}] * 25)
    assert len(raised.value.errors) == 25
    assert "... and 15 more" in str(raised.value)


def test_formats_module_does_not_import_torch():
    heavy = "('torch', 'transformers', 'datasets')"
    code = f"import sys, core.formats; print(any(m in sys.modules for m in {heavy}))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_validating_a_large_text_file_holds_one_line_not_the_file(tmp_path, suffix) -> None:
    # Issue 16, item 6: a 100 MB JSONL took about 1 GB of the server's memory at upload.
    import csv
    import tracemalloc

    path = tmp_path / f"big{suffix}"
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        if suffix == ".csv":
            writer.writerow(["prompt", "completion"])
        for i in range(60_000):
            prompt, completion = f"question {i} " + "lorem ipsum " * 15, f"answer {i} " + "dolor sit " * 15
            if suffix == ".csv":
                writer.writerow([prompt, completion])
            else:
                stream.write(json.dumps({"prompt": prompt, "completion": completion}) + "\n")
    assert path.stat().st_size > 20 << 20

    tracemalloc.start()
    try:
        summary = validate_file(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary.num_samples == 60_000 and summary.format == "prompt_completion"
    assert peak < 2 << 20, f"validating a {path.stat().st_size >> 20} MB file peaked at {peak >> 20} MB"


def test_a_json_string_holding_a_line_separator_stays_one_line(tmp_path) -> None:
    # json.dumps(ensure_ascii=False) writes U+2028 as is; it ends no JSONL line.
    path = tmp_path / "sep.jsonl"
    path.write_text(
        json.dumps({"text": "one\u2028two"}, ensure_ascii=False) + "\n" + json.dumps({"text": "x"}) + "\n",
        encoding="utf-8",
    )
    assert validate_file(path).num_samples == 2
    assert read_records(path) == [{"text": "one\u2028two"}, {"text": "x"}]
    assert read_records(path).line_numbers == [1, 2]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".json"])
def test_a_file_that_is_not_utf8_is_one_problem_of_the_whole_file(tmp_path, suffix) -> None:
    body = {".jsonl": b'{"text": "caf\xe9"}\n', ".csv": b"text\ncaf\xe9\n", ".json": b'[{"text": "caf\xe9"}]'}
    path = tmp_path / f"latin1{suffix}"
    path.write_bytes(body[suffix])
    for read in (validate_file, read_records):
        with pytest.raises(DatasetError) as refused:
            read(path)
        assert lines_of(refused.value) == [0] and "not UTF-8 text" in str(refused.value)

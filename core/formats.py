"""Dataset files: read them, detect their format, and say exactly what is wrong.

Used by the API server at upload time, so it must be fast to import: no torch,
transformers or datasets here (pyarrow only for Parquet, imported when needed).

Formats, detected from the columns of each record (first match wins):

- messages:          {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}
                     optional system first, then user/assistant alternating, ending with assistant
- prompt_completion: {"prompt": str, "completion": str}
- instruction:       {"instruction": str, "input": str (optional), "output": str}  (Alpaca)
- text:              {"text": str}, already templated (like mlabonne/guanaco-llama2-1k)

Limits (ReadLimits) keep a hostile or careless file from taking the server's memory:
the decoded size, the number of rows and of fields, and the nesting depth of JSON are
checked before or while reading, and strings must be valid Unicode (a lone UTF-16
surrogate such as "\\ud800" parses as JSON but cannot be stored or tokenized).

Line numbers are 1-based and point into the file: the JSONL line; for .json the
line where the array element starts; for CSV the file line (the header is line 1);
for Parquet the row index + 1. Line 0 means the file as a whole.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

FORMATS = ("text", "prompt_completion", "messages", "instruction")
SUPPORTED_EXTENSIONS = (".jsonl", ".json", ".csv", ".parquet")
ROLES = ("system", "user", "assistant")
MAX_ERRORS = 1000  # enough to fix a file; a broken million-line file should not build a million errors
SHOWN_ERRORS = 10


@dataclass(frozen=True)
class ReadLimits:
    """What one dataset file may hold; the server passes its settings, the worker the defaults."""

    max_bytes: int = 256 << 20  # decoded: the text, or a Parquet file's values once decompressed
    max_rows: int = 1_000_000
    max_columns: int = 64
    max_depth: int = 32


@dataclass
class LineError:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line > 0 else self.message


class DatasetError(ValueError):
    """A dataset that cannot be used, with every problem found and its line number."""

    def __init__(self, errors: list[LineError]):
        self.errors = errors
        shown = "\n".join(f"  {error}" for error in errors[:SHOWN_ERRORS])
        more = f"\n  ... and {len(errors) - SHOWN_ERRORS} more" if len(errors) > SHOWN_ERRORS else ""
        super().__init__(f"{len(errors)} problem(s) in the dataset:\n{shown}{more}")


@dataclass
class DatasetSummary:
    format: str
    num_samples: int
    columns: list[str]


class Records(list):
    """A list of records that remembers the file line of each one (for error messages)."""

    def __init__(
        self, records: list[dict], line_numbers: list[int], parse_errors: list[LineError] | None = None
    ):
        super().__init__(records)
        self.line_numbers = line_numbers
        # Lines that could not be parsed at all; kept so one upload reports them together
        # with the problems of the lines that did parse.
        self.parse_errors = parse_errors or []


# --- reading -------------------------------------------------------------------


def read_records(path: Path, *, keep_going: bool = False, limits: ReadLimits | None = None) -> Records:
    """The records of a .jsonl/.json/.csv/.parquet file; DatasetError on what cannot be parsed.

    keep_going: return the records that parsed, with the broken lines in .parse_errors.
    """
    path = Path(path)
    limits = limits or ReadLimits()
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        raise DatasetError(
            [
                LineError(
                    0,
                    f"unsupported file type {suffix or '(none)'!r}; use one of "
                    + ", ".join(SUPPORTED_EXTENSIONS),
                )
            ]
        )
    if suffix == ".parquet":
        records = _read_parquet(path, limits)
    else:
        _check_text_size(path, limits)
        with _utf8_errors(), _open_text(path) as stream:
            if suffix == ".json":
                records = _read_json(stream.read())
            else:
                records = _collect(_TEXT_ITEMS[suffix](stream))
        records.parse_errors[:0] = _limit_errors(records, limits)
    if records.parse_errors and not keep_going:
        raise DatasetError(records.parse_errors)
    if not records and not records.parse_errors:
        raise DatasetError([LineError(0, "the file is empty: no samples")])
    return records


def _check_text_size(path: Path, limits: ReadLimits) -> None:
    """Before reading: a text file's size is its decoded size."""
    if path.stat().st_size > limits.max_bytes:
        raise DatasetError([LineError(0, f"the file is larger than the {_mb(limits.max_bytes)} limit")])


def _open_text(path: Path) -> IO[str]:
    # utf-8-sig: tolerate the BOM spreadsheet tools write. newline="": lines end at \n, \r or
    # \r\n only (csv needs it; str.splitlines would also split JSON strings holding U+2028).
    return path.open(encoding="utf-8-sig", newline="")


@contextmanager
def _utf8_errors() -> Iterator[None]:
    """A file that is not UTF-8 is one problem of the whole file, wherever the bad byte is."""
    try:
        yield
    except UnicodeDecodeError as error:
        raise DatasetError([LineError(0, f"the file is not UTF-8 text: {error}")]) from None


Item = tuple[int, "dict | LineError"]
"""A file line and what it holds: a record, or why it is not one."""


def _collect(items: Iterable[Item]) -> Records:
    records: list[dict] = []
    lines: list[int] = []
    errors: list[LineError] = []
    for line, item in items:
        if isinstance(item, LineError):
            errors.append(item)
        else:
            records.append(item)
            lines.append(line)
    return Records(records, lines, errors)


def _jsonl_items(lines: Iterable[str]) -> Iterator[Item]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue  # blank lines (a trailing newline, a separator) carry no sample
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            yield number, LineError(number, f"invalid JSON: {error.msg} (column {error.colno})")
            continue
        except (ValueError, RecursionError) as error:
            yield number, LineError(number, _unparsable(error))
            continue
        if not isinstance(value, dict):
            yield number, LineError(number, f"expected a JSON object, found {_json_type(value)}")
            continue
        yield number, value


def _read_json(text: str) -> Records:
    """A JSON array of objects, decoded element by element so each keeps its line number."""
    decoder = json.JSONDecoder()
    position = _skip_space(text, 0)
    if position == len(text):
        return Records([], [])
    if text[position] != "[":
        raise DatasetError(
            [LineError(_line_of(text, position), "a .json file must hold an array of objects")]
        )
    records: list[dict] = []
    lines: list[int] = []
    errors: list[LineError] = []
    position = _skip_space(text, position + 1)
    while position < len(text) and text[position] != "]":
        line = _line_of(text, position)
        try:
            value, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:
            raise DatasetError(
                [*errors, LineError(error.lineno, f"invalid JSON: {error.msg} (column {error.colno})")]
            ) from None
        except (ValueError, RecursionError) as error:
            raise DatasetError([*errors, LineError(line, _unparsable(error))]) from None
        if isinstance(value, dict):
            records.append(value)
            lines.append(line)
        else:
            errors.append(LineError(line, f"expected a JSON object, found {_json_type(value)}"))
        position = _skip_space(text, position)
        if position < len(text) and text[position] == ",":
            position = _skip_space(text, position + 1)
        elif position < len(text) and text[position] != "]":
            raise DatasetError(
                [*errors, LineError(_line_of(text, position), "invalid JSON: expected ',' or ']'")]
            )
    if position >= len(text):
        raise DatasetError(
            [*errors, LineError(_line_of(text, len(text)), "invalid JSON: the array is not closed")]
        )
    if _skip_space(text, position + 1) != len(text):
        errors.append(LineError(_line_of(text, position + 1), "unexpected content after the array"))
    _raise_if(errors)
    return Records(records, lines)


def _csv_items(stream: IO[str]) -> Iterator[Item]:
    reader = csv.reader(stream)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as error:
        raise DatasetError([LineError(1, f"invalid CSV header: {error}")]) from None
    header = [name.strip() for name in header]
    for name in sorted({n for n in header if header.count(n) > 1}):
        yield 1, LineError(1, f"duplicate column {name!r}")
    if "" in header:
        yield 1, LineError(1, "empty column name in the header")
    start = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            yield reader.line_num, LineError(reader.line_num, f"invalid CSV: {error}")
            break
        line, start = start, reader.line_num + 1  # a quoted field may span several file lines
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            yield line, LineError(line, f"expected {len(header)} fields (the header's), found {len(row)}")
            continue
        record: dict[str, Any] = dict(zip(header, row, strict=True))
        if "messages" in record:  # a chat column holds the turns as a JSON string
            try:
                record["messages"] = json.loads(record["messages"])
            except json.JSONDecodeError as error:
                yield line, LineError(line, f"column 'messages' is not valid JSON: {error.msg}")
                continue
            except (ValueError, RecursionError) as error:
                yield line, LineError(line, f"column 'messages': {_unparsable(error)}")
                continue
        yield line, record


_TEXT_ITEMS: dict[str, Callable[[IO[str]], Iterator[Item]]] = {".jsonl": _jsonl_items, ".csv": _csv_items}
"""The text formats read one record at a time: validated at upload without holding the file."""


def _read_parquet(path: Path, limits: ReadLimits) -> Records:
    """Rows and columns are checked from the footer before any data is decoded, then the
    decoded size batch by batch: a few KB of dictionary-encoded Parquet can decode to GBs."""
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        metadata = parquet.metadata
        if metadata.num_rows > limits.max_rows:
            raise DatasetError([LineError(0, f"{metadata.num_rows} rows; at most {limits.max_rows} allowed")])
        if metadata.num_columns > limits.max_columns:
            raise DatasetError(
                [LineError(0, f"{metadata.num_columns} columns; at most {limits.max_columns} allowed")]
            )
        rows: list[dict] = []
        decoded = 0
        for batch in parquet.iter_batches(batch_size=1_000):
            decoded += _decoded_bytes(batch)
            if decoded > limits.max_bytes:
                raise DatasetError([LineError(0, f"the data decodes to more than {_mb(limits.max_bytes)}")])
            rows += batch.to_pylist()
    except DatasetError:
        raise
    except Exception as error:  # pyarrow raises several types for a broken file
        raise DatasetError([LineError(0, f"not a readable Parquet file: {error}")]) from None
    records = Records(rows, list(range(1, len(rows) + 1)))
    records.parse_errors += _limit_errors(records, limits)
    return records


def _decoded_bytes(batch: Any) -> int:
    """The batch's size once its dictionary-encoded columns are expanded, computed without expanding them."""
    import pyarrow as pa
    import pyarrow.compute as pc

    size = 0
    for column in batch.columns:
        if pa.types.is_dictionary(column.type):
            lengths = (
                pc.binary_length(column.dictionary)
                if pa.types.is_string(column.type.value_type) or pa.types.is_binary(column.type.value_type)
                else None
            )
            if lengths is None:  # other value types: as large as the widest value, per row
                size += len(column) * max(column.dictionary.nbytes, 1)
            else:
                size += (pc.sum(pc.take(lengths, column.indices)).as_py() or 0) + 4 * len(column)
        else:
            size += column.nbytes
    return size


def _limit_errors(records: Records, limits: ReadLimits) -> list[LineError]:
    """Too many rows, too many fields, too deep, or strings that are not valid Unicode."""
    if len(records) > limits.max_rows:
        return [LineError(0, f"{len(records)} samples; at most {limits.max_rows} allowed")]
    errors: list[LineError] = []
    for record, line in zip(records, records.line_numbers, strict=True):
        if len(errors) >= SHOWN_ERRORS:
            break
        if problem := _record_limit_problem(record, limits):
            errors.append(LineError(line, problem))
    if errors:  # the broken records leave the list, as unparsable lines do
        bad = {error.line for error in errors}
        kept = [(r, n) for r, n in zip(records, records.line_numbers, strict=True) if n not in bad]
        records[:] = [record for record, _ in kept]
        records.line_numbers = [number for _, number in kept]
    return errors


def _record_limit_problem(record: dict, limits: ReadLimits) -> str | None:
    if len(record) > limits.max_columns:
        return f"{len(record)} fields; at most {limits.max_columns} allowed"
    return _structure_problem(record, limits.max_depth)


def _structure_problem(value: Any, max_depth: int) -> str | None:
    """Nesting deeper than max_depth, or a string that UTF-8 cannot encode; walked without recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            return f"nested deeper than {max_depth} levels"
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return "invalid Unicode: a string holds a lone surrogate (such as \\ud800)"
        elif isinstance(item, dict):
            stack += [(key, depth + 1) for key in item]
            stack += [(child, depth + 1) for child in item.values()]
        elif isinstance(item, list):
            stack += [(child, depth + 1) for child in item]
    return None


def _unparsable(error: ValueError | RecursionError) -> str:
    if isinstance(error, RecursionError):
        return "invalid JSON: nested too deeply"
    # int() refuses numbers of more than 4300 digits (CVE-2020-10735); say it plainly
    return "invalid JSON: a number is too long"


def _mb(size: int) -> str:
    return f"{size / (1 << 20):g} MB"


# --- validating ----------------------------------------------------------------


def detect_format(record: dict) -> str | None:
    """The format a record's columns say, or None when no known set of columns is there."""
    if "messages" in record:
        return "messages"
    if "prompt" in record and "completion" in record:
        return "prompt_completion"
    if "instruction" in record and "output" in record:
        return "instruction"
    if "text" in record:
        return "text"
    return None


class _FormatCheck:
    """Records against one format, one at a time: the first record that has one sets it (auto)."""

    def __init__(self, declared_format: str) -> None:
        if declared_format != "auto" and declared_format not in FORMATS:
            raise DatasetError(
                [
                    LineError(
                        0, f"unknown format {declared_format!r}; choose auto or one of {', '.join(FORMATS)}"
                    )
                ]
            )
        self.declared_format = declared_format
        self.dataset_format = declared_format if declared_format != "auto" else None
        self.format_line = 0
        self.columns: dict[str, None] = {}  # insertion-ordered set

    def problems(self, record: Any, line: int) -> list[LineError]:
        if not isinstance(record, dict):
            return [LineError(line, f"expected an object with named fields, found {_json_type(record)}")]
        self.columns.update(dict.fromkeys(record))
        found = detect_format(record)
        if self.dataset_format is None:
            if found is None:
                return [LineError(line, _no_format_message(record))]
            self.dataset_format, self.format_line = found, line
        elif self.declared_format == "auto" and found != self.dataset_format:
            if found is None:
                return [LineError(line, _no_format_message(record))]
            return [
                LineError(
                    line,
                    f"looks like format {found!r}, "
                    f"but line {self.format_line} set the file's format to {self.dataset_format!r}",
                )
            ]
        return [LineError(line, problem) for problem in _CHECKS[self.dataset_format](record)]

    def summary(self, num_samples: int) -> DatasetSummary:
        assert self.dataset_format is not None
        return DatasetSummary(format=self.dataset_format, num_samples=num_samples, columns=list(self.columns))


def validate_records(records: list[dict], declared_format: str = "auto") -> DatasetSummary:
    """Check every record against one format; DatasetError lists every problem with its line."""
    check = _FormatCheck(declared_format)
    if not records:
        raise DatasetError([LineError(0, "the dataset is empty: no samples")])
    line_numbers = getattr(records, "line_numbers", None) or list(range(1, len(records) + 1))
    errors: list[LineError] = []
    for record, line in zip(records, line_numbers, strict=True):
        if len(errors) >= MAX_ERRORS:
            break
        errors += check.problems(record, line)
    _raise_if(errors[:MAX_ERRORS])
    return check.summary(len(records))


def validate_file(
    path: Path, declared_format: str = "auto", limits: ReadLimits | None = None
) -> DatasetSummary:
    """Every problem of the file at once: lines that do not parse and records that do not fit."""
    path = Path(path)
    limits = limits or ReadLimits()
    if path.suffix.lower() in _TEXT_ITEMS:
        return _validate_text_file(path, declared_format, limits)
    records = read_records(path, keep_going=True, limits=limits)
    problems = list(records.parse_errors)
    summary = None
    if records:
        try:
            summary = validate_records(records, declared_format)
        except DatasetError as error:
            problems += error.errors
    if problems:
        raise DatasetError(sorted(problems, key=lambda problem: problem.line)[:MAX_ERRORS])
    assert summary is not None
    return summary


def _validate_text_file(path: Path, declared_format: str, limits: ReadLimits) -> DatasetSummary:
    """validate_file for JSONL and CSV, one record at a time: the server's memory holds a line
    and the problems found, not the file (a 100 MB JSONL held as records took about 500 MB)."""
    check = _FormatCheck(declared_format)
    _check_text_size(path, limits)
    problems: list[LineError] = []
    limit_problems = samples = 0
    with _utf8_errors(), _open_text(path) as stream:
        for line, item in _TEXT_ITEMS[path.suffix.lower()](stream):
            if isinstance(item, LineError):
                problems.append(item)
            else:
                samples += 1
                if samples > limits.max_rows:
                    continue  # counted for the message, not checked
                if problem := _record_limit_problem(item, limits):
                    # At most SHOWN_ERRORS of these, as read_records reports them.
                    limit_problems += 1
                    if limit_problems <= SHOWN_ERRORS:
                        problems.append(LineError(line, problem))
                    continue
                problems += check.problems(item, line)
            if len(problems) >= MAX_ERRORS and samples <= limits.max_rows:
                break
    if samples > limits.max_rows:
        raise DatasetError([LineError(0, f"{samples} samples; at most {limits.max_rows} allowed")])
    if not samples and not problems:
        raise DatasetError([LineError(0, "the file is empty: no samples")])
    _raise_if(sorted(problems, key=lambda problem: problem.line)[:MAX_ERRORS])
    return check.summary(samples)


def _check_text(record: dict) -> list[str]:
    return _string_problems(record, ("text",))


def _check_prompt_completion(record: dict) -> list[str]:
    return _string_problems(record, ("prompt", "completion"))


def _check_instruction(record: dict) -> list[str]:
    problems = _string_problems(record, ("instruction", "output"))
    value = record.get("input")
    if value is not None and not isinstance(value, str):
        problems.append(f"field 'input' must be a string (may be empty), found {_json_type(value)}")
    return problems


def _check_messages(record: dict) -> list[str]:
    messages = record.get("messages")
    if not isinstance(messages, list):
        return [f"field 'messages' must be a list of {{role, content}} objects, found {_json_type(messages)}"]
    if not messages:
        return ["field 'messages' is empty"]
    problems: list[str] = []
    roles: list[Any] = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            problems.append(
                f"{where} must be an object with 'role' and 'content', found {_json_type(message)}"
            )
            roles.append(None)
            continue
        role = message.get("role")
        if role not in ROLES:
            problems.append(f"{where}: role {role!r} is not one of {', '.join(ROLES)}")
        content = message.get("content")
        if not isinstance(content, str):
            problems.append(f"{where}: 'content' must be a string, found {_json_type(content)}")
        elif not content.strip():
            problems.append(f"{where}: 'content' is empty")
        roles.append(role)
    if problems:
        return problems
    turns = roles[1:] if roles[0] == "system" else roles
    if "system" in turns:
        problems.append(f"messages[{roles.index('system', 1)}]: a system message may only come first")
    for index, role in enumerate(turns):
        expected = "user" if index % 2 == 0 else "assistant"
        if role != expected and role != "system":
            position = index + (len(roles) - len(turns))
            problems.append(
                f"messages[{position}]: expected role {expected!r}, found {role!r} "
                "(turns alternate user/assistant)"
            )
            break
    if not problems and turns[-1:] != ["assistant"]:
        problems.append("the conversation must end with an assistant message (the answer to learn)")
    return problems


_CHECKS = {
    "text": _check_text,
    "prompt_completion": _check_prompt_completion,
    "instruction": _check_instruction,
    "messages": _check_messages,
}


def _string_problems(record: dict, names: tuple[str, ...]) -> list[str]:
    problems = []
    for name in names:
        value = record.get(name)
        if name not in record or value is None:
            problems.append(f"missing field {name!r}")
        elif not isinstance(value, str):
            problems.append(f"field {name!r} must be a string, found {_json_type(value)}")
        elif not value.strip():
            problems.append(f"field {name!r} is empty")
    return problems


def _no_format_message(record: dict) -> str:
    found = ", ".join(sorted(map(str, record))) or "none"
    return (
        f"no known format in the columns ({found}); expected 'text', 'prompt'+'completion', "
        "'messages', or 'instruction'+'output'"
    )


def _json_type(value: Any) -> str:
    names = {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def _line_of(text: str, position: int) -> int:
    return text.count("\n", 0, position) + 1


def _raise_if(errors: list[LineError]) -> None:
    if errors:
        raise DatasetError(errors)

"""The user-facing data format: one `{"input": str, "output": str}` object per line."""

from __future__ import annotations

import json
from pathlib import Path

from solora_node.data.examples import DataError, Example

EXPECTED = 'expected one JSON object per line: {"input": "...", "output": "..."}'


def load_jsonl(path: Path) -> list[Example]:
    """Read a JSONL task file; any problem is a one-line DataError naming file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM (Windows editors) is not data
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; {EXPECTED}") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text; {EXPECTED}") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror}); {EXPECTED}") from None
    examples = [
        _parse_line(path, number, line)
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip()
    ]
    if not examples:
        raise DataError(f"{path}: no examples (empty file); {EXPECTED}")
    return examples


def _parse_line(path: Path, number: int, line: str) -> Example:
    where = f"{path}:{number}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: invalid JSON ({exc.msg}); {EXPECTED}") from None
    if not isinstance(record, dict):
        raise DataError(f"{where}: got a JSON {type(record).__name__}; {EXPECTED}")
    for key in ("input", "output"):
        if key not in record:
            raise DataError(f"{where}: missing key {key!r}; {EXPECTED}")
        if not isinstance(record[key], str):
            kind = type(record[key]).__name__
            raise DataError(f"{where}: {key!r} is a {kind}, expected a string; {EXPECTED}")
    if not record["output"].strip():
        raise DataError(f"{where}: 'output' is empty; expected a non-empty answer")
    return Example(input=record["input"], output=record["output"])

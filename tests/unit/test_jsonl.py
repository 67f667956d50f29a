"""JSONL task files: every bad case is a one-line DataError naming the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from solora_node.config import TaskSection
from solora_node.data import DataError, Example, load_jsonl, load_task
from solora_node.data.tasks import infer_kind
from solora_node.method_settings import task_settings


def write(tmp_path: Path, text: str, name: str = "task.jsonl") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path: Path) -> str:
    with pytest.raises(DataError) as info:
        load_jsonl(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_reads_examples_and_skips_blank_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path, '{"input": "a", "output": "b"}\n\n{"input": "c", "output": "d", "x": 1}\n'
    )
    assert load_jsonl(path) == [Example("a", "b"), Example("c", "d")]


def test_missing_file_is_named(tmp_path: Path) -> None:
    message = error_of(tmp_path / "absent.jsonl")
    assert "absent.jsonl" in message and "not found" in message


def test_empty_file(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "\n  \n"))
    assert "task.jsonl" in message and "empty" in message


@pytest.mark.parametrize(
    ("bad_line", "what"),
    [
        ('{"input": "a", "output": ', "invalid JSON"),
        ('["a", "b"]', "got a JSON list"),
        ('{"output": "b"}', "missing key 'input'"),
        ('{"input": "a"}', "missing key 'output'"),
        ('{"input": 3, "output": "b"}', "'input' is a int"),
        ('{"input": "a", "output": null}', "'output' is a NoneType"),
        ('{"input": "a", "output": "  "}', "'output' is empty"),
    ],
)
def test_bad_line_names_file_and_line(tmp_path: Path, bad_line: str, what: str) -> None:
    good = '{"input": "a", "output": "b"}'
    message = error_of(write(tmp_path, f"{good}\n{good}\n{bad_line}\n"))
    assert f"task.jsonl:3: {what}" in message
    assert "expected" in message


def test_kind_is_label_for_a_small_closed_answer_set() -> None:
    train = [Example(str(i), "yes" if i % 2 else "no") for i in range(10)]
    assert infer_kind(train, [Example("x", "no")]) == ("label", ("no", "yes"))
    # An eval answer never seen in training cannot be chosen among labels.
    assert infer_kind(train, [Example("x", "maybe")]) == ("generate", ())
    many = [Example(str(i), str(i)) for i in range(40)]
    assert infer_kind(many, many[:3]) == ("generate", ())


def test_load_task_from_jsonl_shards_and_limits(tmp_path: Path) -> None:
    lines = "".join(f'{{"input": "q{i}", "output": "{"ab"[i % 2]}"}}\n' for i in range(20))
    train = write(tmp_path, lines, "train.jsonl")
    evaluation = write(tmp_path, lines, "eval.jsonl")
    shards = [
        load_task(
            task_settings(
                TaskSection(
                    name="mine",
                    source="jsonl",
                    train_file=train,
                    eval_file=evaluation,
                    shard_index=i,
                    shard_count=3,
                    eval_examples=5,
                )
            ),
            seed=0,
        )
        for i in range(3)
    ]
    assert all(s.kind == "label" and s.labels == ("a", "b") for s in shards)
    assert all(len(s.eval) == 5 for s in shards)
    inputs = [ex.input for s in shards for ex in s.train]
    assert sorted(inputs) == sorted(f"q{i}" for i in range(20))
    limited = load_task(
        task_settings(
            TaskSection(
                name="mine",
                source="jsonl",
                train_file=train,
                eval_file=evaluation,
                max_train_examples=4,
            )
        ),
        seed=0,
    )
    assert len(limited.train) == 4

"""Built-in tasks and token encoding: exact properties of splits, shards and labels."""

from __future__ import annotations

import pytest

from solora_node.config import TaskSection
from solora_node.data import BUILTIN_TASKS, DataError, Example, builtin_task, load_task
from solora_node.data.encode import IGNORE_INDEX, answer_ids, collate, encode_example, prompt_ids
from solora_node.method_settings import task_settings
from solora_node.model import byte_tokenizer

EXPECTED_SIZES = {  # (train, eval) of the whole task, any seed
    "arithmetic": (544, 128),
    "topic": (362, 89),
    "language": (710, 181),
    "reverse": (1072, 128),
}


def test_suite_is_the_documented_one() -> None:
    assert set(BUILTIN_TASKS) == set(EXPECTED_SIZES)


@pytest.mark.parametrize("name", BUILTIN_TASKS)
def test_sizes_and_disjoint_splits(name: str) -> None:
    task = builtin_task(name, seed=3)
    assert (len(task.train), len(task.eval)) == EXPECTED_SIZES[name]
    train_inputs = {ex.input for ex in task.train}
    eval_inputs = {ex.input for ex in task.eval}
    assert len(train_inputs) == len(task.train) and len(eval_inputs) == len(task.eval)
    assert not train_inputs & eval_inputs
    assert all(ex.input.strip() and ex.output.strip() for ex in task.train + task.eval)


@pytest.mark.parametrize("name", BUILTIN_TASKS)
def test_deterministic_by_seed(name: str) -> None:
    assert builtin_task(name, seed=1) == builtin_task(name, seed=1)
    assert builtin_task(name, seed=1).eval != builtin_task(name, seed=2).eval


@pytest.mark.parametrize("name", BUILTIN_TASKS)
def test_shards_partition_train_and_share_eval(name: str) -> None:
    whole = builtin_task(name, seed=0)
    shards = [builtin_task(name, seed=0, shard_index=i, shard_count=3) for i in range(3)]
    inputs = [ex.input for s in shards for ex in s.train]
    assert len(inputs) == len(set(inputs)) == len(whole.train)
    assert set(inputs) == {ex.input for ex in whole.train}
    assert all(s.eval == whole.eval and s.labels == whole.labels for s in shards)


@pytest.mark.parametrize("name", ["topic", "language"])
def test_label_tasks_are_consistent_and_balanced(name: str) -> None:
    task = builtin_task(name, seed=0)
    assert task.kind == "label"
    assert task.labels == tuple(sorted(task.labels)) and len(task.labels) >= 4
    for split in (task.train, task.eval):
        assert {ex.output for ex in split} == set(task.labels)
    counts = [sum(ex.output == label for ex in task.eval) for label in task.labels]
    assert max(counts) <= 2 * min(counts)
    # The first 64 (the default eval size) must not be dominated by one class.
    head = [ex.output for ex in task.eval[:64]]
    assert max(head.count(label) for label in task.labels) < 32


def test_generated_tasks_answer_correctly() -> None:
    for ex in builtin_task("arithmetic", seed=0).eval:
        a, op, b = ex.input.removeprefix("What is ").removesuffix("?").split()
        assert int(ex.output) == (int(a) + int(b) if op == "+" else int(a) - int(b)) >= 0
    for ex in builtin_task("reverse", seed=0).eval:
        letters = ex.input.removeprefix("Reverse the letters: ").split()
        assert ex.output.split() == letters[::-1]
    assert builtin_task("arithmetic", 0).kind == builtin_task("reverse", 0).kind == "generate"


def test_unknown_task_and_empty_shard() -> None:
    with pytest.raises(DataError, match="not a built-in task"):
        builtin_task("poetry", seed=0)
    cfg = TaskSection(
        name="topic", shard_index=2, shard_count=3, max_train_examples=10, eval_examples=7
    )
    task = load_task(task_settings(cfg), seed=0)
    assert len(task.train) == 10 and len(task.eval) == 7


def test_labels_are_minus_100_exactly_on_prompt_tokens() -> None:
    tok = byte_tokenizer()
    example = Example("What is 2 + 3?", "5")
    input_ids, labels = encode_example(tok, example, max_len=64)
    prompt = prompt_ids(tok, example.input)
    answer = answer_ids(tok, example.output)
    assert input_ids == prompt + answer
    assert labels == [IGNORE_INDEX] * len(prompt) + answer
    assert answer[-1] == tok.eos_token_id


def test_prompt_uses_the_chat_template_or_a_plain_format() -> None:
    tok = byte_tokenizer()
    assert tok.decode(prompt_ids(tok, "hi")) == "<|user|>hi\n<|assistant|>"
    tok.chat_template = None
    assert tok.decode(prompt_ids(tok, "hi")) == "Q: hi\nA: "


def test_long_prompts_are_cut_from_the_left_never_the_answer() -> None:
    tok = byte_tokenizer()
    example = Example("x" * 200 + " END", "the answer")
    input_ids, labels = encode_example(tok, example, max_len=32)
    answer = answer_ids(tok, example.output)
    assert len(input_ids) == 32
    assert input_ids[-len(answer) :] == answer == labels[-len(answer) :]
    assert tok.decode(input_ids[: -len(answer)]).endswith("END\n<|assistant|>")
    # An answer longer than max_len is kept whole.
    ids, labs = encode_example(tok, Example("q", "y" * 40), max_len=16)
    assert ids == labs == answer_ids(tok, "y" * 40)


def test_collate_right_pads() -> None:
    batch = collate([([1, 2, 3], [-100, 2, 3]), ([4], [4])], pad_token_id=0)
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 2, 3], [4, -100, -100]]

"""Task data for a node: the built-in suite and user JSONL files.

Built-in tasks (sizes for any seed; eval is the same for all shards):

- ``arithmetic`` (generate): "What is 17 + 5?" -> "22", operands 0..20, additions and
  non-negative subtractions: 672 distinct prompts, 128 eval / 544 train. Exact match.
- ``topic`` (label): chatterbot-corpus English utterances (questions and answers,
  8..120 chars) labelled by their file: ai, coding, emotion, literature, trivia; at most
  96 per topic (literature has 67): 451 texts, 89 eval / 362 train, stratified.
- ``language`` (label): utterances of english, french, german, italian, dutch,
  portuguese, spanish; at most 128 per language (french has 123 unambiguous):
  891 texts, 181 eval / 710 train, stratified.
- ``reverse`` (generate): "Reverse the letters: c a t" -> "t a c", 3..5 random letters:
  1200 distinct prompts, 128 eval / 1072 train. Exact match.

Texts that occur under two labels are dropped; train and eval never share an input.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from solora_node.data.corpus import language_utterances, topic_utterances, unambiguous
from solora_node.data.encode import answer_ids, prompt_ids
from solora_node.data.examples import DataError, Example, TaskData, TaskKind
from solora_node.data.generated import arithmetic_examples, reverse_examples
from solora_node.data.jsonl import load_jsonl
from solora_node.data.settings import TaskSettings
from solora_node.data.split import seeded_shuffle, shard, stratified_split

__all__ = [
    "BUILTIN_TASKS",
    "DataError",
    "Example",
    "TaskData",
    "builtin_task",
    "infer_kind",
    "jsonl_task",
    "load_task",
]

TOPICS = ("ai", "coding", "emotion", "literature", "trivia")
TOPIC_CAP = 96
LANGUAGES = ("english", "french", "german", "italian", "dutch", "portuguese", "spanish")
LANGUAGE_CAP = 128
CORPUS_EVAL_FRACTION = 0.2
GENERATED_EVAL = 128
# A JSONL task whose answers form a small closed set is scored by choosing among them.
MAX_JSONL_LABELS = 32

Splits = tuple[list[Example], list[Example], TaskKind]


def _generated(examples: list[Example], seed: int, name: str) -> Splits:
    pool = seeded_shuffle(examples, seed, name)
    return pool[GENERATED_EVAL:], pool[:GENERATED_EVAL], "generate"


def _arithmetic(seed: int) -> Splits:
    return _generated(arithmetic_examples(), seed, "arithmetic")


def _reverse(seed: int) -> Splits:
    return _generated(reverse_examples(seed), seed, "reverse")


def _topic(seed: int) -> Splits:
    pool = unambiguous(topic_utterances(TOPICS), TOPIC_CAP)
    train, evaluation = stratified_split(pool, CORPUS_EVAL_FRACTION, seed, "topic")
    return train, evaluation, "label"


def _language(seed: int) -> Splits:
    pool = unambiguous(language_utterances(LANGUAGES), LANGUAGE_CAP)
    train, evaluation = stratified_split(pool, CORPUS_EVAL_FRACTION, seed, "language")
    return train, evaluation, "label"


_BUILDERS: dict[str, Callable[[int], Splits]] = {
    "arithmetic": _arithmetic,
    "topic": _topic,
    "language": _language,
    "reverse": _reverse,
}
BUILTIN_TASKS: tuple[str, ...] = tuple(_BUILDERS)


def builtin_task(
    name: str, seed: int, shard_index: int = 0, shard_count: int = 1, validation: int = 0
) -> TaskData:
    """A built-in task; shards split the train set disjointly, eval is shared by all shards.

    Nodes of one task must pass the same seed (the federation's) to get disjoint shards.
    `validation` examples are taken from the train split before sharding (train keeps the
    rest), so every shard sees the same validation set and none trains on it.
    """
    builder = _BUILDERS.get(name)
    if builder is None:
        raise DataError(
            f"task {name!r}: not a built-in task; expected one of {list(BUILTIN_TASKS)}"
        )
    train, evaluation, kind = builder(seed)
    labels = tuple(sorted({ex.output for ex in train + evaluation})) if kind == "label" else ()
    held, train = hold_out(train, validation, name)
    return TaskData(
        name=name,
        kind=kind,
        labels=labels,
        train=shard(train, shard_index, shard_count),
        eval=evaluation,
        validation=held,
    )


def hold_out(train: list[Example], count: int, name: str) -> tuple[list[Example], list[Example]]:
    """(validation, rest): the first `count` train examples (train splits are shuffled),
    leaving at least half of train to train on."""
    if count < 0 or count > len(train) // 2:
        raise DataError(
            f"task {name!r}: cannot hold out {count} validation examples from "
            f"{len(train)} train examples; expected at most half of them"
        )
    return train[:count], train[count:]


def jsonl_task(
    name: str,
    train_file: Path,
    eval_file: Path,
    shard_index: int = 0,
    shard_count: int = 1,
    validation: int = 0,
    validation_file: Path | None = None,
) -> TaskData:
    """A user task from JSONL files; its kind is inferred from the answers.

    Validation comes from `validation_file` when given, else the first `validation`
    train lines are held out (before sharding).
    """
    train = load_jsonl(train_file)
    evaluation = load_jsonl(eval_file)
    if validation_file is not None:
        held = load_jsonl(validation_file)[:validation] if validation else []
    else:
        held, train = hold_out(train, validation, name)
    kind, labels = infer_kind(train, evaluation + held)
    return TaskData(
        name=name,
        kind=kind,
        labels=labels,
        train=shard(train, shard_index, shard_count),
        eval=evaluation,
        validation=held,
    )


def infer_kind(train: list[Example], evaluation: list[Example]) -> tuple[TaskKind, tuple[str, ...]]:
    """'label' when every eval answer is one of at most MAX_JSONL_LABELS train answers.

    Decided on the full train file, before sharding, so all shards agree on the labels.
    """
    train_answers = {ex.output for ex in train}
    eval_answers = {ex.output for ex in evaluation}
    if len(train_answers) <= MAX_JSONL_LABELS and eval_answers <= train_answers:
        return "label", tuple(sorted(train_answers))
    return "generate", ()


def kind_reason(task: TaskData, from_files: bool) -> str:
    """Why a task is scored the way it is, in words for logs and results."""
    if not from_files:
        how = "closed answer set" if task.kind == "label" else "open answers"
        return f"built-in task with {how}"
    if task.kind == "label":
        return (
            f"every eval answer is one of the {len(task.labels)} train answers "
            f"(at most {MAX_JSONL_LABELS}): scored by choosing among them"
        )
    return (
        f"answers are not a closed set of at most {MAX_JSONL_LABELS} train answers: "
        "scored by exact match of the generated answer"
    )


def truncated(tokenizer: Any, examples: list[Example], max_len: int) -> int:
    """How many examples (prompt in the chat format + answer + EOS) exceed max_len tokens."""
    return sum(
        len(prompt_ids(tokenizer, ex.input)) + len(answer_ids(tokenizer, ex.output)) > max_len
        for ex in examples
    )


def load_task(cfg: TaskSettings, seed: int) -> TaskData:
    """This node's task data as configured, with the train and eval size limits applied."""
    if cfg.source == "jsonl":
        if cfg.train_file is None or cfg.eval_file is None:
            raise DataError(f"task {cfg.name!r}: source 'jsonl' needs train_file and eval_file")
        task = jsonl_task(cfg.name, cfg.train_file, cfg.eval_file, cfg.shard_index, cfg.shard_count)
    else:
        task = builtin_task(cfg.name, seed, cfg.shard_index, cfg.shard_count)
    train = task.train[: cfg.max_train_examples] if cfg.max_train_examples else task.train
    if not train:
        raise DataError(
            f"task {cfg.name!r}: shard {cfg.shard_index} of {cfg.shard_count} has no train "
            "examples; expected shard_count below the size of the train split"
        )
    return TaskData(
        name=task.name,
        kind=task.kind,
        labels=task.labels,
        train=train,
        eval=task.eval[: cfg.eval_examples],
    )

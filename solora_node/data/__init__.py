"""Task data: the JSONL format, the built-in task suite, and token encoding."""

from solora_node.data.encode import collate, encode_example
from solora_node.data.examples import DataError, Example, TaskData
from solora_node.data.jsonl import load_jsonl
from solora_node.data.settings import TaskSettings
from solora_node.data.tasks import BUILTIN_TASKS, builtin_task, load_task

__all__ = [
    "BUILTIN_TASKS",
    "DataError",
    "Example",
    "TaskData",
    "TaskSettings",
    "builtin_task",
    "collate",
    "encode_example",
    "load_jsonl",
    "load_task",
]

"""Utterances from the chatterbot-corpus package (BSD), read as plain YAML data.

The package is located with importlib and never imported: only its YAML files are used.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Iterable
from pathlib import Path

import yaml

from solora_node.data.examples import DataError
from solora_node.data.split import seeded_shuffle

CORPUS_PACKAGE = "chatterbot_corpus"
# Short single-line utterances only: long answers are code listings or essays that
# would dominate the token budget and say little about topic or language.
MIN_CHARS = 8
MAX_CHARS = 120


def corpus_dir() -> Path:
    spec = importlib.util.find_spec(CORPUS_PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "data"
        if candidate.is_dir():
            return candidate
    raise DataError(
        "chatterbot-corpus data not found: `pip install chatterbot-corpus` "
        "(the built-in topic and language tasks need it)"
    )


@functools.lru_cache(maxsize=64)
def _file_utterances(path: Path) -> frozenset[str]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(
            f"{path}: unreadable corpus file ({exc}); reinstall chatterbot-corpus"
        ) from None
    found: set[str] = set()
    conversations = document.get("conversations") if isinstance(document, dict) else None
    for conversation in conversations or []:
        for utterance in conversation if isinstance(conversation, list) else []:
            if not isinstance(utterance, str) or "```" in utterance or "\n" in utterance.strip():
                continue
            text = " ".join(utterance.split())
            if MIN_CHARS <= len(text) <= MAX_CHARS:
                found.add(text)
    return frozenset(found)


def utterances(files: Iterable[Path]) -> set[str]:
    merged: set[str] = set()
    for path in files:
        merged |= _file_utterances(path)
    return merged


def topic_utterances(topics: Iterable[str], language: str = "english") -> dict[str, set[str]]:
    """Utterances of each topic file (e.g. data/english/trivia.yml) keyed by file stem."""
    folder = corpus_dir() / language
    return {topic: utterances([folder / f"{topic}.yml"]) for topic in topics}


def language_utterances(languages: Iterable[str]) -> dict[str, set[str]]:
    """All utterances of each language folder, keyed by folder name."""
    root = corpus_dir()
    return {lang: utterances(sorted((root / lang).glob("*.yml"))) for lang in languages}


def unambiguous(by_label: dict[str, set[str]], cap: int) -> dict[str, list[str]]:
    """Drop texts found under two labels (no right answer), then keep at most `cap` per label.

    The capped pool is a fixed pseudo-random choice (not the alphabetical head, which
    would skew towards capitalised texts), the same for every seed: the seed only moves
    texts between train and eval.
    """
    counts: dict[str, int] = {}
    for texts in by_label.values():
        for text in texts:
            counts[text] = counts.get(text, 0) + 1
    return {
        label: seeded_shuffle(sorted(t for t in texts if counts[t] == 1), 0, f"pool:{label}")[:cap]
        for label, texts in by_label.items()
    }

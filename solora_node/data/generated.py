"""Generated tasks: unlimited, license-free, and small enough for a 135M model to learn."""

from __future__ import annotations

import random
import string

from solora_node.data.examples import Example

# Operands stay below this bound so the answers are one or two tokens and the model
# learns the answer format, not arithmetic, within a few dozen steps.
ARITHMETIC_MAX = 20
REVERSE_MIN_LETTERS = 3
REVERSE_MAX_LETTERS = 5
REVERSE_POOL = 1200


def arithmetic_examples() -> list[Example]:
    """Every `a + b` and every non-negative `a - b` with operands in [0, ARITHMETIC_MAX]."""
    examples = []
    for a in range(ARITHMETIC_MAX + 1):
        for b in range(ARITHMETIC_MAX + 1):
            examples.append(Example(f"What is {a} + {b}?", str(a + b)))
            if a >= b:
                examples.append(Example(f"What is {a} - {b}?", str(a - b)))
    return examples


def reverse_examples(seed: int, count: int = REVERSE_POOL) -> list[Example]:
    """Distinct space-separated letter strings and their reversal ("c a t" -> "t a c").

    Spaces make each letter its own token in common BPE vocabularies, so the task is
    pure sequence manipulation rather than spelling, which small models do badly.
    """
    rng = random.Random(f"reverse:{seed}")
    seen: dict[str, Example] = {}
    while len(seen) < count:
        size = rng.randint(REVERSE_MIN_LETTERS, REVERSE_MAX_LETTERS)
        letters = [rng.choice(string.ascii_lowercase) for _ in range(size)]
        text = " ".join(letters)
        if text not in seen:
            seen[text] = Example(f"Reverse the letters: {text}", " ".join(reversed(letters)))
    return list(seen.values())

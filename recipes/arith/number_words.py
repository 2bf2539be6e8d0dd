"""English number words for 0..20, the vocabulary of the spoken-arithmetic task.

    number_to_words(13)      -> "thirteen"
    words_to_number("Twenty") -> 20
"""

from __future__ import annotations

NUMBER_WORDS: tuple[str, ...] = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen", "twenty",
)  # index = value
MAX_NUMBER = len(NUMBER_WORDS) - 1  # 20

_VALUES = {word: value for value, word in enumerate(NUMBER_WORDS)}


def number_to_words(n: int) -> str:
    """0..20 -> its English word; ValueError outside that range."""
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_NUMBER:
        raise ValueError(f"number_to_words covers the integers 0..{MAX_NUMBER}, got {n!r}")
    return NUMBER_WORDS[n]


def words_to_number(text: str) -> int | None:
    """The value of a single number word (case and surrounding space ignored), else None."""
    return _VALUES.get(text.strip().lower())

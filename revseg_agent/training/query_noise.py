"""Stray words in training queries, so a policy trained from scratch is not thrown by a word it
never saw.

A policy whose language model is trained from nothing (the synthetic world's `revseg-tiny`)
knows only the words of its training queries; the world's test split asks half its questions
in a phrasing held out of training ("find the red circle"), and a stray first word was enough
to make round 1 run on without closing its answer. Asking round 1 queries with a random
pseudo-word inserted somewhere, while its target restates the query without it, teaches it to
read past what it cannot read. The word is random letters, never one of the held-out
phrasings' words on purpose: what is taught is robustness, not the test's wording.
"""

from __future__ import annotations

import string

import numpy as np

LETTERS = np.array(list(string.ascii_lowercase))


def stray_word(rng: np.random.Generator, *, shortest: int = 2, longest: int = 8) -> str:
    """A pseudo-word of `shortest`-`longest` random lowercase letters."""
    return "".join(rng.choice(LETTERS, size=int(rng.integers(shortest, longest + 1))))


def with_stray_word(query: str, rng: np.random.Generator) -> str:
    """`query` with one `stray_word` inserted at a random word boundary (before the first word,
    between two, or after the last): every word of the query is kept, in order."""
    words = query.split()
    at = int(rng.integers(len(words) + 1))
    return " ".join([*words[:at], stray_word(rng), *words[at:]])

"""Candidate retrieval: the few tasks a note most likely means, from a list of any size. Pure.

Each text becomes a set of character grams over all its `forms` (folded surface, kana reading,
romaji): adjacent pairs and pairs one character apart, so that a swapped or dropped letter
("mlik", "gyunyu") still shares most grams. Tasks are scored by IDF-weighted cosine over an
inverted index, so a note costs time in proportion to the grams it shares, not to the list.
"""

import math
from collections.abc import Iterable
from dataclasses import dataclass

from bridge.todo.normalize import forms

DEFAULT_K = 8


def grams(text: str) -> set[str]:
    """Adjacent and one-apart character pairs of every form of `text`, word by word."""
    out: set[str] = set()
    for form in forms(text):
        for word in form.split():
            if len(word) == 1:
                out.add(word)
                continue
            for i in range(len(word) - 1):
                out.add(word[i : i + 2])
                if i + 2 < len(word):
                    out.add(word[i] + word[i + 2])
    return out


@dataclass(frozen=True)
class Candidate:
    """A task that may be what the note means, with its similarity (0..1)."""

    uid: str
    score: float


class CandidateIndex:
    """An inverted index of task texts; `top(note, k)` gives the best `k` candidates."""

    def __init__(self, tasks: Iterable[tuple[str, str]] = ()) -> None:
        self._grams: dict[str, set[str]] = {}
        self._postings: dict[str, set[str]] = {}
        self._norms: dict[str, float] = {}  # cleared on every change: IDF depends on the whole list
        for uid, text in tasks:
            self.add(uid, text)

    def __len__(self) -> int:
        return len(self._grams)

    def add(self, uid: str, text: str) -> None:
        """Index (or re-index) a task by the text it is recognised by (title, genre)."""
        self.remove(uid)
        self._norms.clear()
        found = grams(text)
        self._grams[uid] = found
        for gram in found:
            self._postings.setdefault(gram, set()).add(uid)

    def remove(self, uid: str) -> None:
        self._norms.clear()
        for gram in self._grams.pop(uid, ()):
            posting = self._postings.get(gram)
            if posting is not None:
                posting.discard(uid)
                if not posting:
                    del self._postings[gram]

    def _idf(self, gram: str) -> float:
        return math.log(1 + len(self._grams) / len(self._postings.get(gram, ())))

    def top(self, note: str, k: int = DEFAULT_K) -> list[Candidate]:
        """The `k` tasks most similar to `note`, best first (ties by uid, for stable prompts)."""
        query = [g for g in grams(note) if g in self._postings]
        if not query:
            return []
        weights = {g: self._idf(g) for g in query}
        note_norm = math.sqrt(sum(w * w for w in weights.values()))
        scores: dict[str, float] = {}
        for gram, weight in weights.items():
            for uid in self._postings[gram]:
                scores[uid] = scores.get(uid, 0.0) + weight * weight
        ranked = sorted(
            ((s / (note_norm * self._norm(uid)), uid) for uid, s in scores.items()),
            key=lambda pair: (-pair[0], pair[1]),
        )
        return [Candidate(uid, round(score, 4)) for score, uid in ranked[:k]]

    def _norm(self, uid: str) -> float:
        norm = self._norms.get(uid)
        if norm is None:
            norm = math.sqrt(sum(self._idf(g) ** 2 for g in self._grams[uid])) or 1.0
            self._norms[uid] = norm
        return norm


def fuse(*rankings: list[str], k: int = DEFAULT_K, damping: int = 60) -> list[str]:
    """Reciprocal rank fusion: one ranking from several (lexical, semantic), best first."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, uid in enumerate(ranking):
            scores[uid] = scores.get(uid, 0.0) + 1.0 / (damping + rank + 1)
    return sorted(scores, key=lambda uid: (-scores[uid], uid))[:k]

"""Folding note and task text so that spelling variants meet: width, case, kana, kanji readings.

Pure. `forms(text)` gives the spellings a text is compared under: the folded surface, its
kana reading (kanji read by pykakasi) and its romaji, so that 牛乳, ぎゅうにゅう, ギュウニュウ
and gyuunyuu all share character n-grams.
"""

import functools
import re
import unicodedata

import pykakasi

_KATAKANA = re.compile(r"[\u30a1-\u30f6]")
# Punctuation, symbols and spacing carry no meaning for matching ("Milk!!" is "milk").
_NOISE = re.compile(r"[\s\u3000、。・「」『』（）()\[\]!?！？.,:;~〜\-_/\\\"'`*#+=<>|&%$@^]+")
_ROMAJI_RUNS = re.compile(r"([a-z])\1+")


def fold(text: str) -> str:
    """NFKC (full-width ASCII and half-width kana become ordinary), case-folded, kana as hiragana."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _KATAKANA.sub(lambda m: chr(ord(m.group()) - 0x60), text)
    return _NOISE.sub(" ", text).strip()


@functools.lru_cache(maxsize=1)
def _kakasi() -> pykakasi.kakasi:
    return pykakasi.kakasi()  # type: ignore[no-untyped-call]


def warm_up() -> None:
    """Load pykakasi's dictionaries now (they load on first use, about half a second)."""
    forms("牛乳を買う")


def _has_japanese(text: str) -> bool:
    return any("\u3040" <= ch <= "\u9fff" for ch in text)


def forms(text: str) -> tuple[str, ...]:
    """The folded text, and for Japanese its hiragana reading and romaji; each without spaces."""
    folded = fold(text)
    out = [folded]
    if _has_japanese(folded):
        parts = _kakasi().convert(folded)
        reading = "".join(p["hira"] for p in parts)
        romaji = "".join(p["hepburn"] for p in parts)
        out += [reading, fold_romaji(romaji)]
    elif folded.isascii():
        # Romaji typed by hand drops long vowels and double consonants ("gyunyu", "gyuunyuu").
        out.append(fold_romaji(folded))
    return tuple(dict.fromkeys(f for f in out if f))


@functools.lru_cache(maxsize=4096)
def spellings(text: str) -> tuple[str, str, str]:
    """The folded surface, kana reading and romaji of `text`, without spaces (cached: task
    titles are spelled again at every search)."""
    folded = fold(text)
    if _has_japanese(folded):
        parts = _kakasi().convert(folded)
        reading = "".join(p["hira"] for p in parts)
        romaji = fold_romaji("".join(p["hepburn"] for p in parts))
    else:
        reading, romaji = "", fold_romaji(folded) if folded.isascii() else ""
    return folded.replace(" ", ""), reading.replace(" ", ""), romaji.replace(" ", "")


def contains(text: str, query: str) -> bool:
    """Whether `query` is part of `text` in some spelling both have, as note matching reads
    them: ぎゅうにゅう and gyunyu are both in 牛乳を買う, "MILK" in "Oat milk"."""
    return any(q and q in t for q, t in zip(spellings(query), spellings(text), strict=True))


def fold_romaji(text: str) -> str:
    """Collapse repeated letters and the ou/uu long-vowel spellings."""
    text = text.replace("ou", "o").replace("oh", "o")
    return _ROMAJI_RUNS.sub(r"\1", text)

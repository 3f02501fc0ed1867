"""Labelled sets: sub-folders named after the expected state, or a CSV/JSONL of inputs."""

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.errors import Llm2MqttError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
TEXT_SUFFIXES = frozenset({".txt"})


class DatasetError(Llm2MqttError):
    """A labelled set that cannot be read; `problems` lists every one found."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Sample:
    """One labelled input: an image file or a text, and the state the rule should answer."""

    name: str
    expected: str
    path: Path | None = None
    text: str | None = None


def load_samples(source: Path) -> list[Sample]:
    """Every labelled input under `source` (a folder, a .csv or a .jsonl file)."""
    if source.is_dir():
        samples, problems = _from_folders(source)
    elif source.suffix.lower() == ".csv":
        samples, problems = _from_rows(source, _csv_rows(source))
    elif source.suffix.lower() in (".jsonl", ".ndjson"):
        samples, problems = _from_rows(source, _jsonl_rows(source))
    elif source.exists():
        raise DatasetError([f"{source}: a labelled set is a folder, a .csv or a .jsonl file"])
    else:
        raise DatasetError([f"{source}: no such file or folder"])
    if not samples and not problems:
        problems.append(
            f"{source}: no labelled inputs found (expected sub-folders named after the state, "
            "holding .jpg/.png/.webp or .txt files, or rows of path,expected)"
        )
    if problems:
        raise DatasetError(problems)
    return samples


def _from_folders(root: Path) -> tuple[list[Sample], list[str]]:
    samples: list[Sample] = []
    problems: list[str] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
            suffix = path.suffix.lower()
            name = str(path.relative_to(root))
            if suffix in IMAGE_SUFFIXES:
                samples.append(Sample(name=name, expected=folder.name, path=path))
            elif suffix in TEXT_SUFFIXES:
                samples.append(Sample(name=name, expected=folder.name, text=_read_text(path, problems)))
    return samples, problems


def _read_text(path: Path, problems: list[str]) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{path}: cannot read as UTF-8 text: {exc}")
        return ""


def _csv_rows(source: Path) -> list[tuple[int, dict[str, Any] | str]]:
    with source.open(newline="", encoding="utf-8-sig") as handle:
        return [(index, dict(row)) for index, row in enumerate(csv.DictReader(handle), start=2)]


def _jsonl_rows(source: Path) -> list[tuple[int, dict[str, Any] | str]]:
    rows: list[tuple[int, dict[str, Any] | str]] = []
    for index, line in enumerate(source.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            rows.append((index, f"not JSON: {exc.msg}"))
            continue
        rows.append((index, row if isinstance(row, dict) else "not a JSON object"))
    return rows


def _from_rows(source: Path, rows: list[tuple[int, dict[str, Any] | str]]) -> tuple[list[Sample], list[str]]:
    samples: list[Sample] = []
    problems: list[str] = []
    for line, row in rows:
        where = f"{source}:{line}"
        if isinstance(row, str):
            problems.append(f"{where}: {row}")
            continue
        expected = str(row.get("expected") or "").strip()
        path, text = (row.get("path") or "").strip(), row.get("text")
        if not expected:
            problems.append(f"{where}: 'expected' is missing")
        elif path:
            full = (source.parent / path).resolve()
            if not full.is_file():
                problems.append(f"{where}: {path}: no such file")
            else:
                samples.append(Sample(name=path, expected=expected, path=full))
        elif isinstance(text, str) and text.strip():
            samples.append(Sample(name=f"line {line}", expected=expected, text=text))
        else:
            problems.append(f"{where}: needs 'path' (an image, relative to the file) or 'text'")
    return samples, problems

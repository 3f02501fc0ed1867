"""README.ja.md keeps step with README.md: the sections it mirrors exist and hold the same commands.

The Japanese README is not a line-by-line translation. Each of its `##` sections starts with a
marker naming the English section it mirrors (`<!-- en: Home Assistant -->` on the line before
the heading), and the text before the first `##` mirrors the English text before the first
`##` (set-up). The test checks that:

- every Japanese section has a marker, and every marker names an English section that exists
  (an English heading renamed or removed shows up here);
- the sections a new user needs (ESSENTIAL) are in both files;
- each mirrored pair holds the same shell commands: the lines of `sh`/`bash` code blocks and
  inline code that starts like a command (`llm2mqtt …`, `bash …`, `python …`, `.venv/bin/…`).

English sections the Japanese file does not claim to mirror (AWS, benchmarks, the code tree…)
may change freely; a command added to or changed in a mirrored English section must be added
to or changed in its Japanese twin.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOP = "(top)"  # the text before the first `##`: what the project is and how to set it up
ESSENTIAL = [TOP, "Install and run", "Commands", "Rules", "Configuration", "Home Assistant", "Todo notes"]
_MARKER = re.compile(r"^<!-- en: (.+?) -->$")
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_INLINE = re.compile(r"`([^`]+)`")
_COMMAND_START = ("llm2mqtt ", "bash ", "python ", "python3 ", ".venv/bin/")


def sections(text: str, *, marked: bool) -> dict[str, str]:
    """The file's `##` sections by title (for the Japanese file: by the English title its
    marker names), with the text before the first `##` as TOP."""
    found: dict[str, str] = {}
    title, lines = TOP, []
    previous = ""
    for line in text.splitlines():
        if line.startswith("## "):
            found[title] = "\n".join(lines)
            if marked:
                marker = _MARKER.match(previous.strip())
                assert marker, f"README.ja.md: {line!r} has no `<!-- en: … -->` marker on the line before"
                title = marker.group(1)
            else:
                title = line[3:].strip()
            assert title not in found, f"section {title!r} appears twice"
            lines = []
        elif not _MARKER.match(line.strip()):
            lines.append(line)
        previous = line
    found[title] = "\n".join(lines)
    return found


def commands(section: str) -> list[str]:
    """The shell commands a section shows, in order: code-block lines, then inline commands."""
    found = []
    for language, body in _FENCE.findall(section):
        if language in ("sh", "bash", "shell", "console"):
            for line in body.splitlines():
                line = line.strip().removeprefix("$ ")
                if line and not line.startswith("#"):
                    found.append(line)
    prose = _FENCE.sub("", section)
    for span in _INLINE.findall(prose):
        span = " ".join(span.split())  # inline code may wrap across lines
        if span.startswith(_COMMAND_START):
            found.append(span)
    return found


ENGLISH = sections((ROOT / "README.md").read_text("utf-8"), marked=False)
JAPANESE = sections((ROOT / "README.ja.md").read_text("utf-8"), marked=True)


def test_every_mirrored_section_exists_in_english() -> None:
    unknown = sorted(set(JAPANESE) - set(ENGLISH))
    assert not unknown, f"README.ja.md mirrors sections README.md does not have: {unknown}"


@pytest.mark.parametrize("title", ESSENTIAL)
def test_essential_sections_are_in_both(title: str) -> None:
    assert title in ENGLISH, f"README.md lost its {title!r} section"
    assert title in JAPANESE, f"README.ja.md has no section marked `<!-- en: {title} -->`"


@pytest.mark.parametrize("title", sorted(JAPANESE))
def test_mirrored_sections_show_the_same_commands(title: str) -> None:
    if title not in ENGLISH:
        pytest.fail(f"README.md has no section {title!r} any more; update the marker in README.ja.md")
    english, japanese = set(commands(ENGLISH[title])), set(commands(JAPANESE[title]))
    assert japanese == english, (
        f"section {title!r}: README.ja.md lacks {sorted(english - japanese)} "
        f"and has {sorted(japanese - english)} that README.md does not"
    )


def test_the_two_files_point_at_each_other() -> None:
    assert "README.ja.md" in ENGLISH[TOP]
    assert "README.md" in JAPANESE[TOP]


def test_commands_are_found_in_blocks_and_inline() -> None:
    text = "intro\n\n```sh\n# comment\n$ bash scripts/test\n```\n\nRun `llm2mqtt\ncheck` or `x`.\n"
    assert commands(text) == ["bash scripts/test", "llm2mqtt check"]

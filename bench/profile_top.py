"""Read a py-spy profile (collapsed stacks, `--format raw`) and print where the time goes.

Run: python -m bench.profile_top PROFILE [N]. Idle samples (threads waiting in select, poll or
a lock) are counted apart, so the shares are of the time the process was working.
"""

import sys
from collections import Counter
from pathlib import Path

# The journal's fsync thread waits for its next request in `WalSync._serve` itself (a C queue's
# get, which py-spy does not show as a frame of its own); its fsyncs are frames below it.
_IDLE = ("select (", "poll (", "epoll", "_wait_for_tstate_lock", "wait (threading", "acquire", "sleep")
_IDLE += ("WalSync._serve (",)


def read(path: Path) -> list[tuple[list[str], int]]:
    """Stacks (outermost frame first) with their sample counts."""
    stacks = []
    for line in path.read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        if frames:
            stacks.append((frames.split(";"), int(count)))
    return stacks


# Parts of the daemon, by a frame that marks them; a sample counts for the first that matches.
PARTS = (
    ("fsync thread", "WalSync._fsync"),
    ("Home Assistant extension", "HomeAssistant"),
    ("outbox (pump, publish, deletes)", "Outbox."),
    ("intake (parse, dedupe, add job)", "Intake."),
    ("ollama client (HTTP to the model)", "OllamaBackend."),
    ("finishing a job (result, journal)", "Runner._finish"),
    ("other journal work (start, commit)", "Journal."),
    ("paho network thread", "Client._thread_main"),
    ("paho on the loop (read, write, keep-alive)", "LoopSocket."),
    ("event loop and the rest", ""),
)


def top(path: Path, n: int = 10) -> dict[str, list[tuple[str, float]]]:
    """The busiest frames: by own time (leaf) and inclusive, as shares of the working samples."""
    parts: Counter[str] = Counter()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    working = 0
    for frames, count in read(path):
        if any(word in frames[-1] for word in _IDLE):
            continue
        working += count
        own[frames[-1]] += count
        threads[frames[0]] += count
        joined = ";".join(frames)
        parts[next(name for name, mark in PARTS if mark in joined)] += count
        for frame in set(frames[1:]):
            inclusive[frame] += count

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * c / working, 1)) for name, c in counter.most_common(n)]

    return {
        "parts": share(parts),
        "threads": share(threads),
        "own": share(own),
        "inclusive": share(inclusive),
    }


if __name__ == "__main__":
    result = top(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 10)
    for kind, rows in result.items():
        print(f"## {kind}")
        for name, pct in rows:
            print(f"{pct:5.1f}%  {name}")

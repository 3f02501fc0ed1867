"""`llm2mqtt eval` on generated sets with known labels, against the Ollama stand-in."""

import csv
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from bridge.cli import main
from tests.conftest import LOCK_RULE
from tests.support.mqtt_helpers import Collector, Daemon
from tests.support.ollama_standin import ChatRequest, OllamaStandin, default_reply
from tests.support.samples import jpeg

LOCKED = (150, 180, 230)  # the stand-in answers "yes" from a mean brightness of 128
UNLOCKED = (30, 60, 100)
WORSE = "llava:7b"


def door_set(root: Path) -> Path:
    """locked/ holds bright pictures, unlocked/ dark ones: the stand-in's good answer is known."""
    for label, levels in (("locked", LOCKED), ("unlocked", UNLOCKED)):
        (root / label).mkdir(parents=True)
        for level in levels:
            (root / label / f"door_{level}.jpg").write_bytes(jpeg(level, size=(640, 480)))
    return root


def worse_model(req: ChatRequest) -> str:
    """A model that wants more light before it says "locked", hesitates, and once talks prose."""
    if req.model != WORSE:
        return default_reply(req)
    level = req.brightness[-1]
    if round(level) == 180 and len(req.messages) == 2:
        return "Yes, it looks locked to me."  # not JSON: the rule asks once more
    return json.dumps({"answer": level >= 200, "confidence": 0.4 if 128 <= level < 200 else 0.9})


def run_eval(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["eval", *args])
    out, err = capsys.readouterr()
    return code, out, err


def eval_lock(
    capsys: pytest.CaptureFixture[str], config: Path, labelled: Path | str, *options: str
) -> tuple[int, str, str]:
    """`llm2mqtt eval front_door_lock SET OPTIONS…` with this test's config."""
    return run_eval(capsys, "-c", str(config), "front_door_lock", str(labelled), *options)


@pytest.fixture
def config(write_config: Callable[..., Path], ollama: OllamaStandin) -> Path:
    ollama.models |= {WORSE}
    ollama.responder = worse_model
    return write_config(ollama={"url": ollama.url, "retries": 0})


def test_two_models_side_by_side_the_worse_one_is_found(
    config: Path, ollama: OllamaStandin, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labelled = door_set(tmp_path / "set")
    report = tmp_path / "report.html"
    code, out, err = eval_lock(
        capsys,
        config,
        labelled,
        "--model",
        f"qwen2.5vl:3b,{WORSE}",
        "--parallel",
        "2",
        "--json",
        "--html",
        str(report),
    )
    assert code == 0, err
    assert "eval: 12/12" in err  # progress on stderr
    result = json.loads(out)
    good, worse = result["variants"]
    assert (good["variant"], worse["variant"]) == ("qwen2.5vl:3b", WORSE)
    assert good["accuracy"] == 1.0
    assert good["misjudged"] == []
    assert good["labels"]["locked"] == {"precision": 1.0, "recall": 1.0, "support": 3}
    assert worse["accuracy"] == pytest.approx(4 / 6, abs=1e-3)
    assert worse["confusion"] == {"locked": {"locked": 1, "unlocked": 2}, "unlocked": {"unlocked": 3}}
    assert worse["labels"]["locked"]["recall"] == pytest.approx(1 / 3, abs=1e-3)
    assert worse["labels"]["unlocked"]["precision"] == pytest.approx(3 / 5, abs=1e-3)
    assert worse["reask_share"] == pytest.approx(1 / 6, abs=1e-3)
    assert worse["low_confidence_share"] == pytest.approx(2 / 6, abs=1e-3)
    assert good["reask_share"] == 0.0
    assert good["low_confidence_share"] == 0.0
    assert {m["input"] for m in worse["misjudged"]} == {"locked/door_150.jpg", "locked/door_180.jpg"}
    assert good["latency_ms"]["p50"] > 0
    assert good["tokens_per_input"] > 256
    # Each picture reached the model cropped and resized as the rule says (max_side 256).
    assert {r.model for r in ollama.requests} == {"qwen2.5vl:3b", WORSE}
    page = report.read_text()
    assert "<svg" in page
    assert page.count("<circle") == 2
    assert page.count("data:image/jpeg;base64,") == 2  # a thumbnail per misjudged picture
    assert LOCK_RULE["prompt"] in page


def test_min_accuracy_fails_the_run_and_the_table_is_readable(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labelled = door_set(tmp_path / "set")
    code, out, err = eval_lock(capsys, config, labelled, "--model", WORSE, "--min-accuracy", "0.9")
    assert code == 1
    assert f"{WORSE}: accuracy 66.7% is below 90.0%" in err
    assert "66.7%" in out
    assert "re-asks" in out
    assert "locked" in out
    code, out, _ = eval_lock(capsys, config, labelled, "--min-accuracy", "0.9")
    assert code == 0
    assert "100.0%" in out


def test_a_prompt_variant_and_repeats_show_instability(
    config: Path, ollama: OllamaStandin, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labelled = door_set(tmp_path / "set")
    calls: dict[float, int] = {}

    def wavering(req: ChatRequest) -> str:
        # The "vague" prompt makes the answer on the darkest locked picture flip between rounds.
        level = req.brightness[-1]
        if "vague" in req.text and round(level) == 150:
            calls[level] = calls.get(level, 0) + 1
            return json.dumps({"answer": calls[level] % 2 == 1, "confidence": 0.5})
        return default_reply(req)

    ollama.responder = wavering
    prompt = tmp_path / "vague.txt"
    prompt.write_text("A vague question: is it locked?")
    code, out, err = eval_lock(
        capsys,
        config,
        labelled,
        "--prompt-file",
        str(prompt),
        "--repeat",
        "2",
        "--json",
    )
    assert code == 0, err
    rule_prompt, vague = json.loads(out)["variants"]
    assert rule_prompt["variant"] == "qwen2.5vl:3b · rule prompt"
    assert rule_prompt["stability"] == 1.0
    assert vague["variant"] == "qwen2.5vl:3b · vague.txt"
    assert vague["stability"] == pytest.approx(5 / 6, abs=1e-3)
    assert vague["accuracy"] == pytest.approx(11 / 12, abs=1e-3)
    assert vague["judgements"] == 12


def test_text_inputs_from_csv_and_jsonl(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        ("we are out of milk, put it on the shopping list", "shopping"),
        ("the security camera went offline", "security"),
        ("vacuum the stairs, a chores day", "chores"),
        ("the weather is nice", "other"),  # the stand-in names no label here: it answers the first
    ]
    with (tmp_path / "notes.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "expected"])
        writer.writerows(rows)
    (tmp_path / "notes.jsonl").write_text("\n".join(json.dumps({"text": t, "expected": e}) for t, e in rows))
    for name in ("notes.csv", "notes.jsonl"):
        code, out, err = run_eval(capsys, "-c", str(config), "message_topic", str(tmp_path / name), "--json")
        assert code == 0, err
        report = json.loads(out)["variants"][0]
        assert report["accuracy"] == 0.75
        assert report["misjudged"] == [
            {
                "input": "line 5" if name == "notes.csv" else "line 4",
                "expected": "other",
                "answer": "shopping",
                "repeat": 0,
                "confidence": 0.9,
            }
        ]


def test_a_broken_set_lists_every_problem(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "set.csv").write_text("path,expected\nmissing.jpg,locked\nx.jpg,\n,locked\n")
    code, _, err = eval_lock(capsys, config, tmp_path / "set.csv")
    assert code == 2
    assert "set.csv:2: missing.jpg: no such file" in err
    assert "set.csv:3: 'expected' is missing" in err
    assert "set.csv:4: needs 'path'" in err
    code, _, err = eval_lock(capsys, config, tmp_path / "empty")
    assert code == 2
    assert "no such file or folder" in err
    labelled = str(door_set(tmp_path / "set"))
    code, _, err = eval_lock(capsys, config, labelled, "--model", "nope:1b")
    assert code == 1
    assert "model 'nope:1b' is not pulled" in err


@pytest.mark.broker
def test_from_journal_exports_a_relabelable_set(
    daemon: Callable[..., Daemon], collector: Collector, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    process = daemon([LOCK_RULE])
    collector.wait_for("llm2mqtt/bridge/state", where=lambda m: m.json() == {"state": "online"})
    for level in (40, 90, 170, 220):
        collector.publish("cameras/front_door/snapshot", jpeg(level))
    collector.wait_for("llm2mqtt/front_door_lock/result", 4)
    assert process.stop() == 0
    out_dir = tmp_path / "relabel"
    code = main(
        [
            "eval",
            "-c",
            str(process.config),
            "--from-journal",
            "front_door_lock",
            "--since",
            "1h",
            str(out_dir),
        ]
    )
    assert code == 0
    assert sorted(p.parent.name for p in out_dir.glob("*/*.jpg")) == [
        "locked",
        "locked",
        "unlocked",
        "unlocked",
    ]
    manifest = [json.loads(line) for line in (out_dir / "_journal.jsonl").read_text().splitlines()]
    assert {row["answer"] for row in manifest} == {"locked", "unlocked"}
    # A person moves a picture judged wrongly into the right folder; eval then counts it wrong.
    moved = next((out_dir / "locked").glob("*.jpg"))
    moved.rename(out_dir / "unlocked" / moved.name)
    capsys.readouterr()
    code, out, _ = eval_lock(capsys, process.config, out_dir, "--json")
    assert code == 0
    assert json.loads(out)["variants"][0]["accuracy"] == 0.75

"""Every command in README.md's ```sh blocks runs as written.

Each command line is split into simple commands (at `&&`, `||`, `;`, `|`). What the command
names in this repository must exist: an `llm2mqtt` command line must parse with the real
argument parser, a `python -m` module must exist and accept its arguments, a script or a
repository file named as an argument must be there. The cheap commands really run (`llm2mqtt
--version`, `check`, `schema`). Commands of other programs (podman, launchctl, systemctl,
brew…) cannot run here and are listed with the reason they are skipped; a program the test
does not know fails it, so a new README section decides how its commands are checked.
"""

import importlib.util
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.cli import _parser
from tests.support.mqtt_helpers import ROOT

README = ROOT / "README.md"
# Programs that cannot run on the build machines, or that change the machine: not run.
ELSEWHERE = {
    "podman": "no container engine on the build machines",
    "docker": "no container engine on the build machines",
    "launchctl": "macOS only",
    "brew": "macOS (Homebrew) only",
    "systemctl": "needs a running systemd",
    "journalctl": "needs a running systemd",
    "ollama": "no Ollama (model weights cannot be downloaded here)",
    "hass": "the real Home Assistant runs under its own tests",
    "git": "changes the clone",
    "apt-get": "changes the machine",
    "install": "changes the machine",
    "cp": "changes the machine",
    "mkdir": "changes the machine",
    "sed": "writes outside the repository",
    "tail": "follows a log forever",
    "grep": "filters another command's output",
    "curl": "talks to a running daemon",
    "mosquitto_pub": "talks to a running broker",
    "mosquitto_sub": "talks to a running broker",
    "mosquitto": "a broker of its own, running until stopped",
    "cd": "moves to another folder",
    "export": "sets the shell's environment",
    "cat": "shows a file",
    "echo": "prints",
    "jq": "filters another command's output",
    "tee": "writes a file",
    "chmod": "changes the machine",
    "open": "macOS only",
    "plutil": "macOS only",
}
# Commands of llm2mqtt that are cheap and need nothing running: these run for real.
RUNNABLE = {"check", "schema"}


@dataclass(frozen=True)
class Command:
    """One simple command of the README, with where it was found."""

    words: tuple[str, ...]
    line: int

    def __str__(self) -> str:
        return f"README.md:{self.line}: {shlex.join(self.words)}"


def readme_commands(text: str) -> list[Command]:
    """The simple commands of every ```sh block (continuations joined, comments dropped)."""
    commands = []
    for block in re.finditer(r"^```sh\n(.*?)^```", text, flags=re.M | re.S):
        first = text.count("\n", 0, block.start(1)) + 1
        lines: list[tuple[int, str]] = []  # (number of its first line, the line with continuations)
        pending, start = "", first
        for offset, raw in enumerate(block.group(1).split("\n")):
            if not pending:
                start = first + offset
            if raw.endswith("\\"):
                pending += raw[:-1] + " "
                continue
            lines.append((start, pending + raw))
            pending = ""
        for number, raw in lines:
            lexer = shlex.shlex(raw, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            lexer.commenters = "#"
            words: list[str] = []
            for token in [*lexer, ";"]:
                if token in ("&&", "||", ";", "|", "&"):
                    if words:
                        commands.append(Command(tuple(words), number))
                    words = []
                else:
                    words.append(token)
    return commands


def _program(words: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """(program, arguments), past `sudo`, `VAR=value` assignments and output redirections."""
    rest = list(words)
    while rest and (rest[0] == "sudo" or re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", rest[0])):
        rest.pop(0)
    arguments: list[str] = []
    words_left = iter(rest[1:])
    for word in words_left:
        if word in (">", ">>", "<"):
            next(words_left, None)  # the file redirected to or from
        else:
            arguments.append(word)
    return rest[0], tuple(arguments)


def _repository_paths(arguments: tuple[str, ...]) -> list[str]:
    """Arguments that name something in this repository (by its top-level entry)."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    top = {path.split("/")[0] for path in tracked.stdout.split()}
    return [
        arg for arg in arguments if not arg.startswith("-") and "$" not in arg and arg.split("/")[0] in top
    ]


COMMANDS = readme_commands(README.read_text())


def test_the_readme_has_commands() -> None:
    programs = {_program(c.words)[0] for c in COMMANDS}
    assert {"bash", ".venv/bin/llm2mqtt", ".venv/bin/python", "podman", "launchctl"} <= programs


def test_blocks_are_split_into_simple_commands() -> None:
    text = "x\n```sh\n# a comment\nA=1 .venv/bin/llm2mqtt -c x check && tail -f log | grep y \\\n  --z\n```\n"
    assert [(c.words, c.line) for c in readme_commands(text)] == [
        (("A=1", ".venv/bin/llm2mqtt", "-c", "x", "check"), 4),
        (("tail", "-f", "log"), 4),
        (("grep", "y", "--z"), 4),
    ]
    assert _program(("sudo", "cp", "a", ">", "b")) == ("cp", ("a",))


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_readme_command(command: Command, tmp_path: Path) -> None:
    check(command, tmp_path)


@pytest.mark.parametrize(
    "line",
    [
        "python -m tests.support.ollama_standin --port 11434",  # not the venv's python
        ".venv/bin/python -m tests.support.no_such_standin",  # no such module
        ".venv/bin/python -m bench overhead nonsense --quick",  # no such benchmark
        ".venv/bin/llm2mqtt chekc",  # no such command
        ".venv/bin/llm2mqtt schema --yaml",  # no such option
        ".venv/bin/llm2mqtt -c missing.yaml check",  # runs, and fails
        "bash scripts/nope",  # no such script
        "frobnicate --all",  # a program nobody decided about
    ],
)
def test_a_wrong_command_fails(line: str, tmp_path: Path) -> None:
    (command,) = readme_commands(f"```sh\n{line}\n```\n")
    with pytest.raises((AssertionError, pytest.fail.Exception)):
        check(command, tmp_path)


def check(command: Command, tmp_path: Path) -> None:
    """Fails, or skips with the reason, or returns: the command runs as written."""
    program, arguments = _program(command.words)
    for path in _repository_paths(arguments):
        assert (ROOT / path).exists(), f"{command}: {path} is not in the repository"
    name = program.rsplit("/", 1)[-1]
    if name == "llm2mqtt":
        _check_llm2mqtt(command, program, arguments, tmp_path)
    elif name in ("python", "python3"):
        _check_python(command, program, arguments)
    elif name in ("pip", "bash"):
        if name == "bash":
            assert arguments, f"{command}: bash without a script"
    elif name in ELSEWHERE:
        pytest.skip(f"{name}: {ELSEWHERE[name]}")
    else:
        pytest.fail(f"{command}: tests/unit/test_readme.py does not know {name!r}: check it or skip it there")


def _check_llm2mqtt(command: Command, program: str, arguments: tuple[str, ...], tmp_path: Path) -> None:
    try:
        parsed = _parser().parse_args(list(arguments))
    except SystemExit as exc:
        if exc.code == 0 and set(arguments) & {"--version", "--help", "-h"}:
            parsed = None
        else:
            raise AssertionError(f"{command}: llm2mqtt does not accept these arguments") from None
    if program not in ("llm2mqtt", ".venv/bin/llm2mqtt"):
        pytest.skip(f"{program}: an install elsewhere; the arguments parse")
    if parsed is not None and (parsed.command not in RUNNABLE or getattr(parsed, "live", False)):
        pytest.skip(f"llm2mqtt {parsed.command}: needs a broker, Ollama or a running daemon; arguments parse")
    # Commands run from the clone; `schema --out` writes into a scratch folder instead.
    cwd = tmp_path if parsed is not None and parsed.command == "schema" else ROOT
    done = subprocess.run(
        [sys.executable, "-m", "bridge", *arguments],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert done.returncode == 0, f"{command}: exit {done.returncode}\n{done.stderr}"


def _check_python(command: Command, program: str, arguments: tuple[str, ...]) -> None:
    if program == "python3" and arguments[:2] == ("-m", "venv"):
        return  # the standard library's
    assert program.startswith((".venv/bin/", "/opt/llm2mqtt/bin/")), (
        f"{command}: use the venv's python (.venv/bin/python): the system one has no dependencies"
    )
    assert arguments[:1] == ("-m",), f"{command}: expected `python -m MODULE`"
    module = arguments[1]
    spec = importlib.util.find_spec(module)
    assert spec is not None, f"{command}: no module {module}"
    if spec.submodule_search_locations is not None:  # a package runs its __main__
        spec = importlib.util.find_spec(f"{module}.__main__")
        assert spec is not None, f"{command}: {module} cannot be run with -m"
    assert spec.origin is not None
    if "argparse" not in Path(spec.origin).read_text():
        return  # a module without options: it exists, that is what can be checked
    # argparse reads the arguments in order and stops at --help: they are checked, nothing runs.
    done = subprocess.run(
        [sys.executable, "-m", module, *arguments[2:], "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"{command}: {module} does not accept these arguments\n{done.stderr}"

"""The `llm2mqtt` command: run, check, try, eval, schema, health.

Each command imports what it needs when it runs: `--version` and `--help` stay as quick as
Python itself starts (no pydantic, paho, ollama or Pillow).
"""

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from bridge import __version__

if TYPE_CHECKING:
    from bridge.config.settings import Config

EXIT_INVALID = 2
EXIT_JOURNAL = 3  # the journal lost a write (full disk, I/O error): a restart resumes from it
SCHEMA_FILES = {"config": "config.schema.json", "rule": "rule.schema.json"}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "schema":
        return _schema(args)
    from bridge.config.loader import load_config
    from bridge.errors import ConfigError, Llm2MqttError

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) found; nothing was started.", file=sys.stderr)
        return EXIT_INVALID
    command = {"run": _run, "check": _check, "try": _try, "eval": _eval, "health": _health}[args.command]
    try:
        return command(config, args)
    except Llm2MqttError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    config_help = "config file (default: $LLM2MQTT_CONFIG or ./config.yaml)"
    parser = argparse.ArgumentParser(
        prog="llm2mqtt", description="A home Ollama server as a job engine for MQTT."
    )
    parser.add_argument("-c", "--config", type=Path, default=None, help=config_help)
    parser.add_argument("--version", action="version", version=f"llm2mqtt {__version__}")
    # `-c` is taken after the command too; SUPPRESS keeps a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", type=Path, default=argparse.SUPPRESS, help=config_help)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", parents=[common], help="run the daemon")
    check = commands.add_parser("check", parents=[common], help="validate config and rules")
    check.add_argument("--live", action="store_true", help="also reach the broker and Ollama")
    try_ = commands.add_parser("try", parents=[common], help="run one rule once against Ollama")
    try_.add_argument("rule")
    source = try_.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", type=Path, help="an image file")
    source.add_argument("--text", help="a text input")
    evaluate = commands.add_parser("eval", parents=[common], help="measure a rule on a labelled set")
    _eval_arguments(evaluate)
    # No `-c` here: the schema is the same for every config, and `--config` names the target.
    schema = commands.add_parser("schema", help="JSON Schema of config.yaml and of a rule file, for editors")
    target = schema.add_mutually_exclusive_group()
    target.add_argument(
        "--config", dest="target", action="store_const", const="config", help="the schema of config.yaml"
    )
    target.add_argument(
        "--rule",
        dest="target",
        action="store_const",
        const="rule",
        help="the schema of a rule file (one rule or a list of rules)",
    )
    target.add_argument(
        "--out", type=Path, metavar="DIR", help=f"write both ({', '.join(SCHEMA_FILES.values())}) into DIR"
    )
    commands.add_parser(
        "health", parents=[common], help="exit 0 when the running daemon's heartbeat is fresh, else 1"
    )
    return parser


def _eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rule", nargs="?", help="the rule to measure (omit with --from-journal)")
    parser.add_argument(
        "set", type=Path, help="labelled set: a folder of state sub-folders, a .csv or .jsonl"
    )
    parser.add_argument("--model", default="", help="comma-separated models to compare (default: the rule's)")
    parser.add_argument(
        "--prompt-file", type=Path, action="append", default=[], help="a prompt variant (repeatable)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="ask each input N times (answer stability)")
    parser.add_argument(
        "--parallel",
        type=int,
        nargs="?",
        const=0,
        default=1,
        help="requests at once (bare flag: ollama.parallel)",
    )
    parser.add_argument("--low-confidence", type=float, default=None, help="default: recheck_below, else 0.6")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--html", type=Path, help="also write a self-contained HTML report here")
    parser.add_argument("--min-accuracy", type=float, help="exit 1 when a variant scores below this (0-1)")
    parser.add_argument("--from-journal", metavar="RULE", help="export the rule's recent inputs into SET")
    parser.add_argument("--since", default="7d", help="with --from-journal: how far back (default 7d)")


def _eval(config: "Config", args: argparse.Namespace) -> int:
    from bridge.eval.command import run  # a tool above the pipeline: loaded only when used

    return run(config, args)


def _schema(args: argparse.Namespace) -> int:
    from bridge.config.loader import combined_schema, config_schema, rule_file_schema

    documents = {"config": config_schema, "rule": rule_file_schema}
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        for target, file_name in SCHEMA_FILES.items():
            path = args.out / file_name
            path.write_text(json.dumps(documents[target](), indent=2, ensure_ascii=False) + "\n")
            print(path)
        return 0
    document = documents[args.target]() if args.target else combined_schema()
    print(json.dumps(document, indent=2, ensure_ascii=False))
    return 0


def _health(config: "Config", args: argparse.Namespace) -> int:
    from bridge.pipeline import heartbeat

    alive, message = heartbeat.verdict(config.data_dir / heartbeat.FILE_NAME, time.time())
    print(message, file=sys.stdout if alive else sys.stderr)
    return 0 if alive else 1


def _setup_logging(level: str) -> None:
    import logging

    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # The HTTP client logs every request at INFO; the bridge says what it decided instead.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _run(config: "Config", args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import os
    import signal

    from bridge.config.loader import config_warnings
    from bridge.daemon import Bridge
    from bridge.pipeline.files import FolderInUse, hold

    _setup_logging(config.settings.log_level)
    os.umask(0o077)  # every file the daemon makes (databases, their WAL, JSON) is its own
    try:
        held = hold(config.data_dir)  # open until the process ends
    except FolderInUse as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for warning in config_warnings(config):
        logging.getLogger("bridge").warning("%s", warning)

    async def serve() -> None:
        bridge = Bridge(config)
        bridge.journal.on_failure = lambda failure: _journal_lost(failure, config.data_dir)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, bridge.stop)
        await bridge.run()

    asyncio.run(serve())
    held.close()
    return 0


def _journal_lost(failure: Exception, data_dir: Path) -> NoReturn:
    """Stop at once, as a kill would: nothing more is acknowledged or published, and the broker
    sends again what was not acknowledged. launchd, systemd or compose start the daemon again,
    and it resumes from what the journal holds."""
    import logging
    import os
    import shutil

    try:
        free = f"{shutil.disk_usage(data_dir).free // 1_000_000} MB free in {data_dir}"
    except OSError as exc:
        free = f"{data_dir}: {exc}"
    logging.getLogger("bridge").critical(
        "%s (%s). Stopping now without acknowledging or publishing anything more (exit %d);"
        " started again, llm2mqtt resumes from the journal",
        failure,
        free,
        EXIT_JOURNAL,
    )
    logging.shutdown()
    os._exit(EXIT_JOURNAL)


def _check(config: "Config", args: argparse.Namespace) -> int:
    from bridge.config.loader import config_warnings
    from bridge.config.settings import leaves_the_house

    rules = config.rules
    print(f"{config.path}: valid; {len(rules)} rule(s): {', '.join(r.name for r in rules) or 'none'}")
    backends = config.settings.backend_settings()
    for rule in rules:
        remote, images = leaves_the_house(rule, backends)
        if remote:
            what = "text and images" if images else "text only (images stay home)"
            print(f"{rule.name}: may leave the house: {what} to {', '.join(remote)}")
    for warning in config_warnings(config):
        print(f"warning: {warning}", file=sys.stderr)
    if not args.live:
        return 0
    from bridge.aws.check import aws_problems  # boto3 is imported only when checking
    from bridge.live_check import run_checks

    report = run_checks(config, print)
    problems = report.problems
    try:
        problems += aws_problems(config.settings.aws, config.rules)
    except Exception as exc:
        problems.append(f"checking AWS failed: {type(exc).__name__}: {exc}")
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        return 1
    print("broker and Ollama reachable; every rule's model is pulled")
    return 0


def _try(config: "Config", args: argparse.Namespace) -> int:
    import asyncio

    from bridge.config.settings import rule_backends
    from bridge.pipeline.backend_pool import build_pool
    from bridge.pipeline.images import ImageError
    from bridge.pipeline.payloads import accepts_problem
    from bridge.pipeline.trial import prepare, run_trial
    from bridge.todo.candidates import trial_fields
    from handlers import handler_for

    rule = config.rule(args.rule)
    if rule is None:
        known = ", ".join(r.name for r in config.rules) or "none"
        print(f"error: unknown rule {args.rule!r}; known rules: {known}", file=sys.stderr)
        return EXIT_INVALID
    image = None
    if args.image is not None:
        try:
            image = prepare(rule, config.settings.limits, args.image.read_bytes())
        except OSError as exc:
            print(f"error: cannot read {args.image}: {exc.strerror}", file=sys.stderr)
            return EXIT_INVALID
        except ImageError as exc:
            print(f"error: {args.image}: {exc}", file=sys.stderr)
            return EXIT_INVALID

    problem = accepts_problem(rule.accepted, has_image=image is not None, has_text=args.text is not None)
    if problem:
        print(f"error: {rule.name}: {problem}", file=sys.stderr)
        return EXIT_INVALID

    async def once() -> dict[str, Any]:
        pool = build_pool(config.settings)
        backends = rule_backends(rule, config.settings.backend_settings(), image=image is not None)
        try:
            async with trial_fields(config, rule) as note_fields:
                fields = await note_fields(args.text, {}) if note_fields else None
                handler = handler_for(rule)
                trial = await run_trial(
                    pool, handler, rule, text=args.text, image=image, fields=fields, backends=backends
                )
        finally:
            await pool.close()
        return trial.result(rule)

    print(json.dumps(asyncio.run(once()), indent=2, ensure_ascii=False))
    return 0

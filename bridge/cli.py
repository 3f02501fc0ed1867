"""The `llm2mqtt` command: run, check, try, eval, schema."""

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bridge import __version__
from bridge.config.loader import ENV_CONFIG, json_schema, load_config
from bridge.config.settings import Config
from bridge.errors import ConfigError, Llm2MqttError
from bridge.pipeline.images import ImageError
from bridge.pipeline.ollama_backend import OllamaBackend, has_model
from bridge.pipeline.trial import prepare, run_trial
from handlers import handler_for

EXIT_INVALID = 2


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "schema":
        print(json.dumps(json_schema(), indent=2, ensure_ascii=False))
        return 0
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) found; nothing was started.", file=sys.stderr)
        return EXIT_INVALID
    command = {"run": _run, "check": _check, "try": _try, "eval": _eval}[args.command]
    try:
        return command(config, args)
    except Llm2MqttError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c",
        "--config",
        type=Path,
        default=None,
        help=f"config file (default: ${ENV_CONFIG} or ./config.yaml)",
    )
    parser = argparse.ArgumentParser(
        prog="llm2mqtt", description="A home Ollama server as a job engine for MQTT.", parents=[common]
    )
    parser.add_argument("--version", action="version", version=f"llm2mqtt {__version__}")
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
    commands.add_parser("schema", parents=[common], help="print the JSON Schema of config and rules")
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


def _eval(config: Config, args: argparse.Namespace) -> int:
    from bridge.eval.command import run  # a tool above the pipeline: loaded only when used

    return run(config, args)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _run(config: Config, args: argparse.Namespace) -> int:
    from bridge.daemon import Bridge

    _setup_logging(config.settings.log_level)

    async def serve() -> None:
        bridge = Bridge(config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, bridge.stop)
        await bridge.run()

    asyncio.run(serve())
    return 0


def _check(config: Config, args: argparse.Namespace) -> int:
    rules = config.rules
    print(f"{config.path}: valid; {len(rules)} rule(s): {', '.join(r.name for r in rules) or 'none'}")
    if not args.live:
        return 0
    problems = _check_broker(config) + asyncio.run(_check_ollama(config))
    from bridge.aws.check import aws_problems  # boto3 is imported only when checking

    problems += aws_problems(config.settings.aws, config.rules)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        return 1
    print("broker and Ollama reachable; every rule's model is pulled")
    return 0


def _check_broker(config: Config) -> list[str]:
    mqtt = config.settings.mqtt
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{mqtt.client_id}-check")
    user, password = mqtt.credentials()
    if user is not None:
        client.username_pw_set(user, password)
    if mqtt.use_tls:
        client.tls_set(ca_certs=mqtt.tls.ca_certs if mqtt.tls else None)
    outcome: dict[str, Any] = {}
    client.on_connect = lambda c, u, f, reason, p: outcome.setdefault("reason", reason)
    try:
        client.connect(mqtt.host, mqtt.port, keepalive=10)
    except OSError as exc:
        return [f"cannot reach the broker at {mqtt.safe_url()}: {exc}"]
    deadline = time.monotonic() + 5
    while "reason" not in outcome and time.monotonic() < deadline:
        client.loop(timeout=0.1)
    client.disconnect()
    reason = outcome.get("reason")
    if reason is None:
        return [f"the broker at {mqtt.safe_url()} did not answer the connection within 5s"]
    if reason.is_failure:
        return [f"the broker at {mqtt.safe_url()} refused the connection: {reason}"]
    print(f"broker at {mqtt.safe_url()}: connected")
    return []


async def _check_ollama(config: Config) -> list[str]:
    backend = OllamaBackend(config.settings.ollama)
    try:
        pulled = await backend.models()
    except Llm2MqttError as exc:
        return [str(exc)]
    finally:
        await backend.close()
    print(f"Ollama at {backend.url}: {len(pulled)} model(s) pulled")
    return [
        f"{config.rule_files.get(rule.name, '?')}: model: '{rule.model}' is not pulled; "
        f"run `ollama pull {rule.model}`"
        for rule in config.rules
        if not has_model(pulled, rule.model)
    ]


def _try(config: Config, args: argparse.Namespace) -> int:
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

    async def once() -> dict[str, Any]:
        backend = OllamaBackend(config.settings.ollama)
        try:
            trial = await run_trial(backend, handler_for(rule), rule, text=args.text, image=image)
        finally:
            await backend.close()
        return trial.result(rule)

    print(json.dumps(asyncio.run(once()), indent=2, ensure_ascii=False))
    return 0

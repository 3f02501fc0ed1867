"""`llm2mqtt eval`: arguments in, report out, exit status for CI."""

import argparse
import asyncio
import json
import sys
import time

from bridge.config.settings import Config
from bridge.config.units import parse_duration
from bridge.errors import InputError
from bridge.eval.dataset import DatasetError, load_samples
from bridge.eval.export import export
from bridge.eval.html import render
from bridge.eval.report import summarize, table
from bridge.eval.run import Judgement, Progress, evaluate, missing_models, variants
from bridge.pipeline.images import PreparedImage
from bridge.todo.candidates import trial_fields

EXIT_BELOW = 1
EXIT_INVALID = 2


def run(config: Config, args: argparse.Namespace) -> int:
    """Run the command; returns the exit status."""
    if args.from_journal:
        return _export(config, args)
    if args.rule is None:
        return _invalid("give the rule and the labelled set: llm2mqtt eval RULE SET")
    rule = config.rule(args.rule)
    if rule is None:
        known = ", ".join(r.name for r in config.rules) or "none"
        return _invalid(f"unknown rule {args.rule!r}; known rules: {known}")
    if args.repeat < 1 or args.parallel < 0:
        return _invalid("--repeat and --parallel take a positive number")
    try:
        samples = load_samples(args.set)
        chosen = variants(rule, [m.strip() for m in args.model.split(",") if m.strip()], args.prompt_file)
    except DatasetError as exc:
        return _invalid(*exc.problems)
    except (InputError, OSError) as exc:
        return _invalid(str(exc))
    parallel = args.parallel or config.settings.ollama.parallel
    settings = config.settings.ollama.model_copy(update={"parallel": parallel})
    missing = asyncio.run(missing_models(settings, chosen))
    if missing:
        for model in missing:
            print(
                f"error: model '{model}' is not pulled on {settings.url}; run `ollama pull {model}`",
                file=sys.stderr,
            )
        return EXIT_BELOW
    low = args.low_confidence if args.low_confidence is not None else (rule.recheck_below or 0.6)
    progress = Progress(len(chosen) * len(samples) * args.repeat)

    async def judge() -> tuple[list[Judgement], dict[str, PreparedImage]]:
        async with trial_fields(config, rule) as note_fields:
            return await evaluate(
                settings,
                config.settings.limits,
                chosen,
                samples,
                repeat=args.repeat,
                progress=progress.step,
                note_fields=note_fields,
            )

    judgements, images = asyncio.run(judge())
    reports = [summarize(variant, judgements, low_confidence=low) for variant in chosen]
    if args.json:
        print(
            json.dumps(
                {"rule": rule.name, "inputs": len(samples), "repeat": args.repeat, "variants": reports},
                indent=2,
                ensure_ascii=False,
            )
        )
    else:
        print(f"{rule.name}: {len(samples)} input(s) × {args.repeat} round(s)\n")
        print(table(reports))
    if args.html is not None:
        texts = {s.name: s.text for s in samples if s.text is not None}
        args.html.write_text(render(rule.name, reports, chosen, images, texts), encoding="utf-8")
        print(f"report written to {args.html}", file=sys.stderr)
    if args.min_accuracy is not None:
        below = [r for r in reports if r["accuracy"] < args.min_accuracy]
        for r in below:
            print(
                f"{r['variant']}: accuracy {r['accuracy']:.1%} is below {args.min_accuracy:.1%}",
                file=sys.stderr,
            )
        if below:
            return EXIT_BELOW
    return 0


def _export(config: Config, args: argparse.Namespace) -> int:
    if config.rule(args.from_journal) is None and args.rule is None:
        print(
            f"note: {args.from_journal!r} is not in the configuration; exporting its jobs anyway",
            file=sys.stderr,
        )
    try:
        since = time.time() - parse_duration(args.since)
    except ValueError as exc:
        return _invalid(f"--since: {exc}")
    count = export(config.data_dir / "journal.sqlite3", args.from_journal, since, args.set)
    print(
        f"{count} input(s) of {args.from_journal} written to {args.set}, one folder per answer; "
        "move wrong ones into the right folder, then run `llm2mqtt eval "
        f"{args.from_journal} {args.set}`"
    )
    return 0


def _invalid(*problems: str) -> int:
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return EXIT_INVALID

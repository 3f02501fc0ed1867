"""Reading config.yaml, secrets and rule files into a validated `Config`.

Validation runs in two stages, like a compiler: every file against its schema, then the
cross-checks (unique names, topics that do not loop back). All problems are collected and
reported together, each with its file, key path and line.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Union

import yaml
from pydantic import Field, TypeAdapter, ValidationError

from bridge.config import homeassistant
from bridge.config.handler_rules import RULE_MODELS
from bridge.config.rules import RuleBase
from bridge.config.settings import Config, Settings
from bridge.errors import ConfigError

ENV_CONFIG = "LLM2MQTT_CONFIG"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
ENV_OVERRIDES = {
    "LLM2MQTT_MQTT_URL": ("mqtt", "url"),
    "LLM2MQTT_OLLAMA_URL": ("ollama", "url"),
    "LLM2MQTT_DATA_DIR": ("data_dir",),
}

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class _Ref:
    """A `!secret name` or `!env NAME` placeholder, resolved after parsing so errors know where."""

    kind: str
    name: str


class _Loader(yaml.SafeLoader):
    pass


def _ref_constructor(kind: str) -> Any:
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> _Ref:
        return _Ref(kind, str(loader.construct_scalar(node)).strip())  # type: ignore[arg-type]

    return construct


_Loader.add_constructor("!secret", _ref_constructor("secret"))
_Loader.add_constructor("!env", _ref_constructor("env"))


def rule_adapter() -> TypeAdapter[Any]:
    """Validates one rule; the `handler` key picks the handler's model."""
    models = tuple(RULE_MODELS.values())
    union = Annotated[Union[models], Field(discriminator="handler")]  # type: ignore[valid-type]  # noqa: UP007
    return TypeAdapter(union)


def default_config_path() -> Path:
    return Path(os.environ.get(ENV_CONFIG, "config.yaml"))


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Load and validate everything; raises ConfigError listing every problem."""
    env = os.environ if environ is None else environ
    path = Path(path or env.get(ENV_CONFIG) or "config.yaml")
    problems: list[str] = []
    secrets = _Secrets(path.parent / "secrets.yaml")

    raw = _read_yaml(path, problems, required=True)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([*problems, f"{path}: the file must be a mapping of keys"])
    lines = _line_map(path)
    raw = _resolve(raw, (), path, lines, secrets, env, problems)
    for variable, keys in ENV_OVERRIDES.items():
        if env.get(variable):
            _set_path(raw, keys, env[variable])

    settings = Settings()
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        problems.extend(_describe(exc, path, lines))

    found = _load_rules(path.parent / settings.rules_dir, secrets, env, problems)
    problems.extend(cross_check(found, settings))
    if problems:
        raise ConfigError(problems)
    return Config(
        settings=settings,
        rules=tuple(rule for rule, _ in found),
        path=path.resolve(),
        rule_files={rule.name: file for rule, file in found},
    )


def cross_check(found: list[tuple[RuleBase, Path]], settings: Settings) -> list[str]:
    """Checks that need more than one file: unique names, no rule consuming bridge output."""
    problems = []
    seen: dict[str, Path] = {}
    for rule, where in found:
        if rule.name in seen:
            problems.append(
                f"{where}: rule name {rule.name!r} is also used in {seen[rule.name]}; names must be unique"
            )
        seen.setdefault(rule.name, where)
        base = settings.mqtt.base_topic
        for index, spec in enumerate(rule.inputs):
            head = spec.mqtt.split("/")[0]
            if head in (base, "+", "#"):
                problems.append(
                    f"{where}: inputs.{index}.mqtt: {spec.mqtt!r} overlaps the bridge's own "
                    f"topics under {base}/ (use {base}/{rule.name}/run to send jobs there)"
                )
        ha_problems = homeassistant.rule_problems(rule.handler, rule.homeassistant)
        problems.extend(f"{where}: {problem}" for problem in ha_problems)
    problems.extend(homeassistant.slug_problems((rule.name, str(where)) for rule, where in found))
    return problems


def _load_rules(
    folder: Path, secrets: "_Secrets", env: Mapping[str, str], problems: list[str]
) -> list[tuple[RuleBase, Path]]:
    found: list[tuple[RuleBase, Path]] = []
    if not folder.is_dir():
        problems.append(f"{folder}: rules folder not found (rules_dir in config.yaml)")
        return found
    adapter = rule_adapter()
    for file in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        data = _read_yaml(file, problems, required=True)
        if data is None:
            continue
        lines = _line_map(file)
        entries: list[tuple[Path_, Any]]
        if isinstance(data, list):
            entries = [((i,), item) for i, item in enumerate(data)]
        elif isinstance(data, dict):
            entries = [((), data)]
        else:
            problems.append(f"{file}: a rule file holds one rule (a mapping) or a list of rules")
            continue
        for prefix, item in entries:
            item = _resolve(item, prefix, file, lines, secrets, env, problems)
            try:
                rule: RuleBase = adapter.validate_python(item)
            except ValidationError as exc:
                problems.extend(_describe(exc, file, lines, prefix))
                continue
            found.append((rule, file))
    return found


def _read_yaml(path: Path, problems: list[str], *, required: bool) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if required:
            problems.append(f"{path}: file not found")
        return None
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{path}: cannot read: {exc}")
        return None
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        reason = getattr(exc, "problem", None) or str(exc)
        problems.append(f"{path}{where}: invalid YAML: {reason}")
        return None


def _line_map(path: Path) -> dict[Path_, int]:
    """Line number (1-based) of every key path in a YAML file, for error messages."""
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"), Loader=_Loader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    lines: dict[Path_, int] = {}

    def walk(node: yaml.Node, at: Path_) -> None:
        lines[at] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                name = key.value
                lines[(*at, name)] = key.start_mark.line + 1
                walk(value, (*at, name))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, (*at, index))

    if root is not None:
        walk(root, ())
    return lines


def _line_of(lines: dict[Path_, int], at: Path_) -> int | None:
    for end in range(len(at), -1, -1):
        key = tuple(str(p) if not isinstance(p, int) else p for p in at[:end])
        if key in lines:
            return lines[key]
    return None


def _format_path(at: Path_) -> str:
    return ".".join(str(p) for p in at) or "(top level)"


def _describe(exc: ValidationError, file: Path, lines: dict[Path_, int], prefix: Path_ = ()) -> list[str]:
    out = []
    for error in exc.errors(include_url=False):
        # A discriminated union puts the handler name in the path; the user never wrote it.
        loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and p in RULE_MODELS))
        at = (*prefix, *loc)
        line = _line_of(lines, at)
        where = f" (line {line})" if line else ""
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key (check its spelling; `llm2mqtt schema` lists the keys)"
        elif error["type"] == "union_tag_invalid":
            message = f"unknown handler; known handlers: {', '.join(sorted(RULE_MODELS))}"
            at = (*at, "handler")
            line = _line_of(lines, at)
            where = f" (line {line})" if line else ""
        elif error["type"] == "union_tag_not_found":
            message = f"missing `handler:` (one of {', '.join(sorted(RULE_MODELS))})"
        out.append(f"{file}: {_format_path(at)}{where}: {message}")
    return out


class _Secrets:
    """secrets.yaml beside config.yaml, read on first use."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._values: dict[str, Any] | None = None

    def get(self, name: str) -> Any:
        if self._values is None:
            loaded = yaml.safe_load(self.path.read_text("utf-8")) if self.path.exists() else {}
            self._values = loaded if isinstance(loaded, dict) else {}
        return self._values.get(name)


def _resolve(
    value: Any,
    at: Path_,
    file: Path,
    lines: dict[Path_, int],
    secrets: _Secrets,
    env: Mapping[str, str],
    problems: list[str],
) -> Any:
    """Replace `!secret` and `!env` placeholders; a missing one is a problem, not a crash."""
    if isinstance(value, dict):
        return {k: _resolve(v, (*at, k), file, lines, secrets, env, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, (*at, i), file, lines, secrets, env, problems) for i, v in enumerate(value)]
    if isinstance(value, _Ref):
        found = secrets.get(value.name) if value.kind == "secret" else env.get(value.name)
        if found is None:
            line = _line_of(lines, at)
            where = f" (line {line})" if line else ""
            source = f"in {secrets.path}" if value.kind == "secret" else "in the environment"
            problems.append(f"{file}: {_format_path(at)}{where}: {value.name!r} is not set {source}")
        return found
    return value


def _set_path(data: dict[str, Any], keys: tuple[str, ...], value: str) -> None:
    for key in keys[:-1]:
        node = data.get(key)
        if not isinstance(node, dict):
            node = data[key] = {}
        data = node
    data[keys[-1]] = value


def config_schema() -> dict[str, Any]:
    """JSON Schema of config.yaml: one document a standard validator or an editor can use."""
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": "llm2mqtt config.yaml",
        **Settings.model_json_schema(by_alias=True),
    }


def rule_file_schema() -> dict[str, Any]:
    """JSON Schema of a rule file: one rule, or a list of rules."""
    rule = rule_adapter().json_schema(by_alias=True)
    definitions = rule.pop("$defs", {})
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": "llm2mqtt rule file",
        "description": "One rule, or a list of rules; `handler` decides which other keys a rule has.",
        "anyOf": [{"$ref": "#/$defs/rule"}, {"type": "array", "items": {"$ref": "#/$defs/rule"}}],
        "$defs": {**definitions, "rule": rule},
    }


def combined_schema() -> dict[str, Any]:
    """Both documents in one: `#/$defs/config` for config.yaml, `#/$defs/rule_file` for a rule file."""
    config, rules = config_schema(), rule_file_schema()
    definitions: dict[str, Any] = dict(config.pop("$defs", {}))
    for name, definition in rules.pop("$defs").items():
        if definitions.setdefault(name, definition) != definition:
            raise RuntimeError(f"config and rule schemas define {name!r} differently")
    for document in (config, rules):
        del document["$schema"]
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": "llm2mqtt",
        "description": "config.yaml follows #/$defs/config; each rules/*.yaml follows #/$defs/rule_file "
        "(one #/$defs/rule or a list of them).",
        "$defs": {**definitions, "config": config, "rule_file": rules},
    }

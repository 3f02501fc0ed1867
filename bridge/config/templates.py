"""Prompt and message templates: Jinja in a sandbox, so a template can never run code."""

from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from bridge.errors import InputError

_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)


@lru_cache(maxsize=512)
def compile_template(source: str) -> Template:
    """Compile once; raises jinja2.TemplateSyntaxError with a line number."""
    return _ENV.from_string(source)


def render(source: str, variables: dict[str, Any]) -> str:
    """Render a template; a variable the input lacks is an InputError naming it."""
    if "{" not in source and "\r" not in source:
        # Plain text (most prompts): what Jinja would give, its one trailing newline dropped.
        return source.removesuffix("\n")
    try:
        return compile_template(source).render(variables)
    except UndefinedError as exc:
        raise InputError(f"the prompt template needs a value the input does not have: {exc}") from None


# Conditions and templates of notifications (SNS, Apprise) run in a sandbox: they read
# values, never run code. Unlike prompts, a missing value renders empty.
SANDBOX = SandboxedEnvironment(autoescape=False)


def check_condition(text: str | None) -> str | None:
    """A validator: the notification condition compiles (ValueError says why not)."""
    if text is not None:
        try:
            SANDBOX.compile_expression(text)
        except TemplateSyntaxError as exc:
            raise ValueError(f"condition error: {exc.message}") from None
    return text


def check_message_template(text: str | None) -> str | None:
    """A validator: the notification template compiles (ValueError says why not)."""
    if text is not None:
        try:
            SANDBOX.from_string(text)
        except TemplateSyntaxError as exc:
            raise ValueError(f"template error on line {exc.lineno}: {exc.message}") from None
    return text

"""Prompt and message templates: Jinja in a sandbox, so a template can never run code."""

from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from bridge.errors import InputError

_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)


@lru_cache(maxsize=512)
def compile_template(source: str) -> Template:
    """Compile once; raises jinja2.TemplateSyntaxError with a line number."""
    return _ENV.from_string(source)


def render(source: str, variables: dict[str, Any]) -> str:
    """Render a template; a variable the input lacks is an InputError naming it."""
    try:
        return compile_template(source).render(variables)
    except UndefinedError as exc:
        raise InputError(f"the prompt template needs a value the input does not have: {exc}") from None

"""Built-in handlers, found by the name a rule gives in `handler:`."""

from typing import Any

from bridge.config.rules import RuleBase
from handlers.base import Answer, Handler, PromptInput
from handlers.classify import ClassifyHandler
from handlers.describe import DescribeHandler
from handlers.extract import ExtractHandler
from handlers.todo_match import TodoMatchHandler
from handlers.yes_no import YesNoHandler

HANDLERS: dict[str, type[Handler[Any]]] = {
    h.name: h for h in (YesNoHandler, ClassifyHandler, ExtractHandler, DescribeHandler, TodoMatchHandler)
}


def handler_for(rule: RuleBase) -> Handler[Any]:
    """The handler instance that answers `rule`."""
    return HANDLERS[rule.handler](rule)


__all__ = ["HANDLERS", "Answer", "Handler", "PromptInput", "handler_for"]

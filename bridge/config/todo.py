"""The `todo:` section of config.yaml: where the Todo list lives."""

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from bridge.config.base import StrictModel
from bridge.config.units import Duration


class HomeAssistantTodoSettings(StrictModel):
    """A Home Assistant to-do list entity, reached through Home Assistant's REST API."""

    url: str = Field(pattern=r"^https?://", description="Home Assistant's base URL, e.g. http://ha:8123")
    token: SecretStr = Field(description="A long-lived access token (use !secret)")
    entity_id: str = Field(pattern=r"^todo\.[a-z0-9_]+$", description="e.g. todo.shopping_list")
    timeout: Duration = Field(10, gt=0, description="Per request to Home Assistant")


class TodoSettings(StrictModel):
    """The Todo list that notes change."""

    backend: Literal["builtin", "homeassistant"] = Field(
        "builtin", description="builtin: SQLite in the data directory; homeassistant: a to-do entity"
    )
    homeassistant: HomeAssistantTodoSettings | None = None
    embed_model: str | None = Field(
        None,
        description="An Ollama embedding model (e.g. bge-m3) whose similarity joins the character-pair "
        "similarity when picking candidates; catches notes in another language than the task",
    )
    list_limit: int = Field(
        500, ge=0, le=10_000, description="Open tasks in the retained <base>/todo/list message"
    )

    @model_validator(mode="after")
    def _backend_configured(self) -> "TodoSettings":
        if self.backend == "homeassistant" and self.homeassistant is None:
            raise ValueError("backend homeassistant needs todo.homeassistant (url, token, entity_id)")
        return self

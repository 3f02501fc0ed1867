"""Home Assistant to-do lists as the Todo backend, through Home Assistant's REST API.

Reads with `todo.get_items` (a service that returns a response: `?return_response`), adds
with `todo.add_item`, changes by uid with `todo.update_item`. httpx errors are translated
here into bridge errors with a message a user can act on.
"""

from typing import Any

import httpx

from bridge.config.todo import HomeAssistantTodoSettings
from bridge.errors import BackendError, BackendUnavailable


class HomeAssistantError(BackendError):
    """Home Assistant refused a request (bad token, unknown entity, invalid data)."""


class HomeAssistantUnavailable(BackendUnavailable):
    """Home Assistant could not be reached or timed out; worth trying again later."""


class HomeAssistantTodo:
    """One to-do entity of Home Assistant."""

    def __init__(self, settings: HomeAssistantTodoSettings, client: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self.entity_id = settings.entity_id
        self._client = client or httpx.AsyncClient(timeout=settings.timeout)

    async def close(self) -> None:
        await self._client.aclose()

    async def items(self) -> list[dict[str, Any]]:
        """The list's items: dicts with uid, summary, status, and due/description when set."""
        body = await self._call("get_items", {"entity_id": self.entity_id}, response=True)
        try:
            items = body["service_response"][self.entity_id]["items"]
        except (KeyError, TypeError):
            raise HomeAssistantError(
                f"Home Assistant's todo.get_items answer has no items for {self.entity_id}"
            ) from None
        return [item for item in items if isinstance(item, dict) and item.get("uid")]

    async def add(self, summary: str, *, due: str | None = None, description: str | None = None) -> None:
        data: dict[str, Any] = {"entity_id": self.entity_id, "item": summary}
        if due:
            data["due_date"] = due
        if description:
            data["description"] = description
        await self._call("add_item", data)

    async def update(
        self,
        uid: str,
        *,
        rename: str | None = None,
        status: str | None = None,
        due: str | None = None,
        description: str | None = None,
    ) -> None:
        data: dict[str, Any] = {"entity_id": self.entity_id, "item": uid}
        changes = {"rename": rename, "status": status, "due_date": due, "description": description}
        data.update({key: value for key, value in changes.items() if value is not None})
        await self._call("update_item", data)

    async def _call(self, service: str, data: dict[str, Any], *, response: bool = False) -> dict[str, Any]:
        url = f"{self.settings.url.rstrip('/')}/api/services/todo/{service}"
        headers = {"Authorization": f"Bearer {self.settings.token.get_secret_value()}"}
        try:
            reply = await self._client.post(
                url, json=data, headers=headers, params={"return_response": "true"} if response else None
            )
        except httpx.TimeoutException:
            raise HomeAssistantUnavailable(
                f"Home Assistant at {self.settings.url} did not answer todo.{service} in time",
                retry_now=False,
            ) from None
        except httpx.TransportError as exc:
            raise HomeAssistantUnavailable(
                f"cannot reach Home Assistant at {self.settings.url} ({type(exc).__name__}): "
                "check that it is running and todo.homeassistant.url"
            ) from None
        if reply.status_code == 401:
            raise HomeAssistantError(
                "Home Assistant refused the token (401): create a long-lived access token in your "
                "Home Assistant profile and set todo.homeassistant.token"
            )
        if reply.status_code in (502, 503, 504):  # restarting, or a proxy in front of it
            raise HomeAssistantUnavailable(f"Home Assistant answered {reply.status_code} to todo.{service}")
        if reply.status_code >= 400:
            # A real Home Assistant answers 500 to todo.get_items for an entity it does not have.
            raise HomeAssistantError(
                f"Home Assistant refused todo.{service} for {self.entity_id} ({reply.status_code}): "
                f"{reply.text[:200]} (is {self.entity_id} a to-do list there? see todo.homeassistant)"
            )
        try:
            body = reply.json()
        except ValueError:
            raise HomeAssistantError(f"Home Assistant's answer to todo.{service} is not JSON") from None
        return body if isinstance(body, dict) else {"changed_states": body}

"""A small HTTP server that answers Home Assistant's to-do services the way its REST API does.

POST /api/services/todo/{get_items,add_item,update_item} with a bearer token; get_items needs
`?return_response` and answers {"changed_states": [], "service_response": {entity: {"items":
[...]}}}, as Home Assistant does. Used where a real Home Assistant is not worth its start-up time
(error paths); tests/e2e/test_todo_homeassistant.py also runs the backend against the real one.
"""

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


class HaTodoStandin:
    """One to-do entity behind a token."""

    def __init__(self, entity_id: str = "todo.shopping", token: str = "good-token") -> None:
        self.entity_id, self.token = entity_id, token
        self.items: list[dict[str, Any]] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                parts = urlsplit(self.path)
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                if self.headers.get("authorization") != f"Bearer {standin.token}":
                    self._send(401, b"401: Unauthorized", "text/plain")
                    return
                service = parts.path.removeprefix("/api/services/todo/")
                standin.calls.append((service, body))
                status, answer = standin.serve(
                    service, body, "return_response" in parse_qs(parts.query, True)
                )
                self._send(status, json.dumps(answer).encode(), "application/json")

            def _send(self, status: int, data: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "HaTodoStandin":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def serve(self, service: str, body: dict[str, Any], want_response: bool) -> tuple[int, Any]:
        if body.get("entity_id") != self.entity_id:
            # As Home Assistant 2025.4 does: the service finds no entity, the API answers 500.
            return 500, "500 Internal Server Error"
        if service == "get_items":
            if not want_response:
                return 400, {
                    "message": "Service call requires responses but caller did not ask for responses"
                }
            return 200, {"changed_states": [], "service_response": {self.entity_id: {"items": self.items}}}
        if service == "add_item":
            item = {"summary": body["item"], "uid": uuid.uuid4().hex, "status": "needs_action"}
            if body.get("due_date"):
                item["due"] = body["due_date"]
            self.items.append(item)
            return 200, []
        if service == "update_item":
            found = next((i for i in self.items if body["item"] in (i["uid"], i["summary"])), None)
            if found is None:
                return 400, {"message": f"Unable to find To-do item: {body['item']}"}
            found.update({k: body[k] for k in ("status",) if k in body})
            if "rename" in body:
                found["summary"] = body["rename"]
            if "due_date" in body:
                found["due"] = body["due_date"]
            return 200, []
        return 400, {"message": f"Service todo.{service} not found"}

"""REST routes of the built-in Todo list, under /api/todo. Changes publish the same
`<base>/todo/event` and retained `<base>/todo/list` messages as notes do."""

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, Field

from bridge.todo.store import Change, TodoError, TodoNotSaved, TodoStore, public

# Every text and number a request carries is bounded: a list is never "all rows", an id never
# overflows SQLite's integers, and no field can carry megabytes onto the broker.
MAX_ROWS = 1000
Limit = Annotated[int, Query(ge=1, le=MAX_ROWS)]
Uid = Annotated[str, Path(min_length=1, max_length=100)]
ChangeId = Annotated[int, Path(ge=1, le=2**62)]


class TaskIn(BaseModel):
    title: str = Field(min_length=1, max_length=200)
    genre: str | None = Field(None, max_length=50)
    due: str | None = Field(None, pattern=r"^\d{4}-\d{2}-\d{2}$")
    description: str | None = Field(None, max_length=2000)


class TaskPatch(BaseModel):
    title: str | None = Field(None, min_length=1, max_length=200)
    genre: str | None = Field(None, max_length=50)
    status: Literal["needs_action", "completed"] | None = None
    due: str | None = Field(None, pattern=r"^\d{4}-\d{2}-\d{2}$")
    description: str | None = Field(None, max_length=2000)
    needs_confirmation: bool | None = None


def todo_router(store: TodoStore, published: Callable[[Change], None]) -> APIRouter:
    """Routes over `store`; `published(change)` announces a change. Handlers are async so they
    run on the daemon's loop."""
    router = APIRouter(prefix="/api/todo", tags=["todo"])

    def apply(change: Callable[[], Change]) -> dict[str, Any]:
        """Make a change, publish it like a note's, and answer with it; a refusal is 404/422,
        a disk that did not keep it 507."""
        try:
            done = change()
        except TodoNotSaved as exc:  # the disk's fault, not the request's
            raise HTTPException(507, f"the Todo list refused the change: {exc}") from None
        except TodoError as exc:
            raise HTTPException(404 if str(exc).startswith("no ") else 422, str(exc)) from None
        published(done)
        return public(done.as_dict())

    @router.get("/tasks")
    async def list_tasks(
        status: Literal["needs_action", "completed"] | None = None,
        genre: Annotated[str | None, Query(max_length=50)] = None,
        q: Annotated[str | None, Query(max_length=200)] = None,
        limit: Limit = 500,
    ) -> dict[str, Any]:
        tasks = store.tasks(status=status, genre=genre, query=q, limit=limit)
        return {"count": len(tasks), "items": [public(t.as_dict()) for t in tasks]}

    @router.get("/tasks/{uid}")
    async def get_task(uid: Uid) -> dict[str, Any]:
        task = store.get(uid)
        if task is None:
            raise HTTPException(404, f"no task with uid {uid!r}")
        return public(task.as_dict())

    @router.post("/tasks", status_code=201)
    async def create_task(task: TaskIn) -> dict[str, Any]:
        return apply(
            lambda: store.create(
                task.title, genre=task.genre, due=task.due, description=task.description, source="api"
            )
        )

    @router.patch("/tasks/{uid}")
    async def update_task(uid: Uid, patch: TaskPatch) -> dict[str, Any]:
        changes = patch.model_dump(exclude_unset=True)
        for required in ("title", "status", "needs_confirmation"):
            if required in changes and changes[required] is None:
                raise HTTPException(422, f"{required} cannot be null")
        return apply(lambda: store.update(uid, source="api", **changes))

    @router.post("/tasks/{uid}/complete")
    async def complete_task(uid: Uid) -> dict[str, Any]:
        return apply(lambda: store.complete(uid, source="api"))

    @router.delete("/tasks/{uid}")
    async def delete_task(uid: Uid) -> dict[str, Any]:
        return apply(lambda: store.delete(uid, source="api"))

    @router.get("/history")
    async def history(
        uid: Annotated[str | None, Query(max_length=100)] = None, limit: Limit = 100
    ) -> dict[str, Any]:
        changes = store.history(uid, limit=limit)
        return {"count": len(changes), "items": [public(c.as_dict()) for c in changes]}

    @router.post("/history/{change_id}/undo")
    async def undo(change_id: ChangeId) -> dict[str, Any]:
        return apply(lambda: store.undo(change_id, source="api"))

    return router

"""Optional semantic candidates: task titles and notes embedded by Ollama (`/api/embed`).

Character pairs cannot see that "get milk" means 牛乳を買う; a multilingual embedding model
can. Task vectors are computed once per title (in batches) and kept in memory; a note costs
one small embed call and one matrix product.
"""

from collections.abc import Mapping

import httpx
import numpy as np
import ollama

from bridge.config.redact import redact_url
from bridge.errors import BackendError, BackendUnavailable, ModelNotFound

BATCH = 256


class EmbeddingRanker:
    """Ranks tasks by cosine similarity of their title's embedding to the note's."""

    def __init__(self, url: str, model: str, *, timeout: float = 30.0) -> None:
        self.url, self.model = redact_url(url.rstrip("/")), model  # self.url: as messages show it
        self._client = ollama.AsyncClient(host=url.rstrip("/"), timeout=httpx.Timeout(timeout, connect=5.0))
        self._titles: dict[str, str] = {}
        self._uids: list[str] = []
        self._matrix = np.zeros((0, 0), dtype=np.float32)
        self.calls = 0

    async def close(self) -> None:
        await self._client._client.aclose()  # the ollama client exposes no close of its own

    async def sync(self, titles: Mapping[str, str]) -> None:
        """Embed tasks that are new or renamed; forget those that are gone."""
        if titles == self._titles:
            return
        kept = {u: i for i, u in enumerate(self._uids) if self._titles.get(u) == titles.get(u)}
        todo = [u for u in titles if u not in kept]
        fresh: dict[str, np.ndarray] = {}
        for start in range(0, len(todo), BATCH):
            chunk = todo[start : start + BATCH]
            for uid, vector in zip(chunk, await self._embed([titles[u] for u in chunk]), strict=True):
                fresh[uid] = vector
        uids = list(titles)
        rows = [fresh[u] if u in fresh else self._matrix[kept[u]] for u in uids]
        self._matrix = np.vstack(rows) if rows else np.zeros((0, 0), dtype=np.float32)
        self._uids, self._titles = uids, dict(titles)

    async def top(self, text: str, k: int) -> list[str]:
        """The uids of the `k` tasks closest in meaning to `text`, best first."""
        if not self._uids:
            return []
        query = (await self._embed([text]))[0]
        scores = self._matrix @ query
        best = np.argsort(-scores, kind="stable")[:k]
        return [self._uids[int(i)] for i in best]

    async def _embed(self, texts: list[str]) -> list[np.ndarray]:
        self.calls += 1
        try:
            reply = await self._client.embed(model=self.model, input=texts)
        except ConnectionError:
            raise BackendUnavailable(f"cannot reach Ollama at {self.url} for embeddings") from None
        except httpx.TimeoutException:
            raise BackendUnavailable(f"Ollama at {self.url} did not embed in time", retry_now=False) from None
        except ollama.ResponseError as exc:
            if exc.status_code == 404:
                raise ModelNotFound(
                    f"embedding model '{self.model}' not found on Ollama at {self.url}: "
                    f"run `ollama pull {self.model}` (todo.embed_model)"
                ) from None
            if exc.status_code == -1 or exc.status_code >= 500:
                raise BackendUnavailable(f"Ollama failed while embedding: {exc.error}") from None
            raise BackendError(f"Ollama refused to embed ({exc.status_code}): {exc.error}") from None
        vectors = []
        for values in reply.embeddings:
            vector = np.asarray(values, dtype=np.float32)
            norm = float(np.linalg.norm(vector))
            vectors.append(vector / norm if norm else vector)
        return vectors

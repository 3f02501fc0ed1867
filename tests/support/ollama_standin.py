"""A protocol-faithful stand-in for an Ollama server, for tests and benchmarks.

Model weights cannot be downloaded in CI, so this speaks Ollama's HTTP API (NDJSON
streaming, nanosecond durations, ``{"error": ...}`` bodies, keep-alive/load
semantics, a bounded queue) and derives each answer from the request, so a test
can prove e.g. that an image really arrived. Manual use:
``python -m tests.support.ollama_standin --port 11434 --latency 0.2 --parallel 2``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import hashlib
import io
import json
import math
import re
import select
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal

from PIL import Image, ImageStat, UnidentifiedImageError

JSON = dict[str, Any]
DEFAULT_MODELS = ("qwen2.5vl:3b", "qwen2.5:3b", "llama3.2:3b", "nomic-embed-text")
# Texts copied from the real server (server/sched.go ErrMaxQueue, runner errors).
BUSY = "server busy, please try again.  maximum pending requests exceeded"
MIDSTREAM_ERROR = "an error was encountered while running the model: unexpected EOF"
RUNNER_DIED = "llama runner process has terminated: exit status 2"
# What nginx answers when the server behind it is down (a reverse proxy in front of Ollama).
BAD_GATEWAY = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
VERSION = "0.12.6"
EMBED_DIM = 64
DEFAULT_KEEP_ALIVE = 300.0  # OLLAMA_KEEP_ALIVE default: 5m


@dataclass(frozen=True)
class ChatRequest:
    """One chat/generate request as the stand-in understood it."""

    model: str
    messages: list[JSON] = field(default_factory=list)
    format: Any = None
    options: JSON = field(default_factory=dict)
    keep_alive: Any = None
    images: list[bytes] = field(default_factory=list)
    brightness: list[float] = field(default_factory=list)
    endpoint: Literal["chat", "generate"] = "chat"
    text: str = ""
    stream: bool = True


Responder = Callable[[ChatRequest], str]


class _HTTPError(Exception):
    """Answered as ``{"error": message}``; only raised before any byte is sent."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def normalize(name: str) -> str:
    """Canonical model name: a name without a tag means ``:latest``."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def _iso(ts: float | None = None) -> str:
    # "Forever" (inf) is clamped to a far-future date, as Ollama shows for keep_alive=-1.
    when = datetime.now(UTC) if ts is None else datetime.fromtimestamp(min(ts, 9e9), UTC)
    return when.isoformat().replace("+00:00", "Z")


_GO_DURATION = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_keep_alive(value: Any) -> float:
    """Seconds a model stays loaded, per Ollama's ``api.Duration`` JSON rules.

    ``None`` → 5 minutes; a number is seconds; a string is a Go duration ("5m",
    "1h30m", "0"); anything negative means forever (``math.inf``).
    """
    if value is None:
        return DEFAULT_KEEP_ALIVE
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        body, pos, seconds = value.strip().lstrip("+-"), 0, 0.0
        for m in _GO_DURATION.finditer(body):
            if m.start() != pos:
                break
            seconds, pos = seconds + float(m[1]) * _UNIT[m[2]], m.end()
        if body != "0" and (pos == 0 or pos != len(body)):
            kind = "missing unit in" if re.fullmatch(r"[\d.]+", body) else "invalid"
            raise _HTTPError(400, f'time: {kind} duration "{value}"')
        seconds *= -1 if value.strip().startswith("-") else 1
    else:
        raise _HTTPError(400, f"json: cannot unmarshal {type(value).__name__} into keep_alive")
    return math.inf if seconds < 0 else seconds


def model_meta(name: str) -> JSON:
    """Deterministic metadata (details, size, digest, capabilities) derived from a name."""
    full = normalize(name)
    base, _, tag = full.partition(":")
    family = re.sub(r"[^a-z]", "", base.rsplit("/", 1)[-1].lower()) or "llama"
    embed = "embed" in base
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([bm])", tag.lower())
    params = float(m[1]) * (1e9 if m[2] == "b" else 1e6) if m else (1.37e8 if embed else 7e9)
    caps = ["embedding"] if embed else ["completion"]
    caps += ["vision"] if not embed and ("vl" in base or "llava" in base) else []
    size = f"{params / 1e9:.1f}B" if params >= 1e9 else f"{params / 1e6:.0f}M"
    details = {
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family],
        "parameter_size": size,
        "quantization_level": "F16" if embed else "Q4_K_M",
    }
    return {
        "name": full,
        "params": int(params),
        "size": int(params * (2.0 if embed else 0.6)),
        "digest": hashlib.sha256(full.encode()).hexdigest(),
        "details": details,
        "capabilities": caps,
        "family": family,
        "context": 2048 if embed else 32768,
    }


def embed_text(text: str) -> list[float]:
    """Unit vector (dimension 64) from a signed, hashed bag of character trigrams.

    Texts sharing trigrams point the same way, so similar texts score higher.
    """
    vec, padded = [0.0] * EMBED_DIM, f"  {text.lower()} "
    for i in range(len(padded) - 2):
        n = int.from_bytes(hashlib.md5(padded[i : i + 3].encode()).digest()[:4], "big")
        vec[n % EMBED_DIM] += 1.0 if (n >> 16) & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vec))
    return [v / norm for v in vec] if norm else [1.0] + [0.0] * (EMBED_DIM - 1)


def _load_image(b64: Any) -> tuple[bytes, float]:
    """Decode one base64 image; return its bytes and mean luminance (0-255)."""
    try:
        data = base64.b64decode(str(b64), validate=True)
    except binascii.Error as exc:  # Go decodes []byte fields while binding JSON: a 400
        raise _HTTPError(400, "illegal base64 data at input byte 0") from exc
    try:
        with Image.open(io.BytesIO(data)) as img:
            return data, float(ImageStat.Stat(img.convert("L")).mean[0])
    except (UnidentifiedImageError, OSError) as exc:
        raise _HTTPError(500, "failed to process inputs: image: unknown format") from exc


def _fill(schema: Any, root: JSON, name: str, req: ChatRequest) -> Any:
    """Build a value valid against ``schema``, chosen from the request's text and image."""
    while isinstance(schema, dict) and isinstance(schema.get("$ref"), str):
        node: Any = root  # local refs only ("#/$defs/X"), which is what pydantic emits
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        schema = node
    if not isinstance(schema, dict):
        return None
    for key in ("anyOf", "oneOf", "allOf"):
        alts = [a for a in schema.get(key, []) if not (isinstance(a, dict) and a.get("type") == "null")]
        if alts:
            return _fill(alts[0], root, name, req)
    bright = bool(req.brightness) and req.brightness[-1] >= 128
    if "const" in schema:
        return schema["const"]
    if isinstance(enum := schema.get("enum"), list) and enum:
        hit = next((v for v in enum if isinstance(v, str) and v.lower() in req.text.lower()), None)
        return hit if hit is not None else (enum[0] if bright or not req.images else enum[-1])
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    lo, hi = schema.get("minimum"), schema.get("maximum")
    if kind == "boolean":
        return bright if req.images else bool(re.search(r"\b(yes|true|locked)\b", req.text, re.I))
    unit_interval = lo is not None and hi is not None and 0 <= lo <= hi <= 1
    if kind == "number" and (name == "confidence" or unit_interval):
        return 0.9
    if kind in ("integer", "number"):
        value: float = 1 if kind == "integer" else 1.0
        return min(max(value, value if lo is None else lo), value if hi is None else hi)
    if kind == "array":
        item = schema.get("items", {})
        return [_fill(item, root, name, req) for _ in range(int(schema.get("minItems", 0)))]
    if kind == "object":
        props: JSON = schema.get("properties", {})
        return {
            k: _fill(v, root, k, req)
            for k, v in props.items()
            if k in schema.get("required", []) or k == "confidence"
        }
    if any(word in name.lower() for word in ("description", "text", "summary")):
        if req.images:
            return f"an image with mean brightness {req.brightness[-1]:.0f}"
        return f"echo: {req.text[:60]}"
    return "x" * max(1, int(schema.get("minLength", 1)))


def default_reply(req: ChatRequest) -> str:
    """The stand-in's answer: schema-valid JSON, ``{"answer": ...}`` or ``echo: ...`` text."""
    if isinstance(req.format, dict):
        return json.dumps(_fill(req.format, req.format, "", req))
    echo = f"echo: {req.text}" + (f" (image mean brightness {req.brightness[-1]:.0f})" if req.images else "")
    return json.dumps({"answer": echo}) if req.format == "json" else echo


class OllamaStandin:
    """Fake Ollama server on a daemon thread; usable as a context manager.

    ``latency``, ``load_delay``, ``parallel``, ``max_queue``, ``models`` and ``responder``
    may be changed while it runs. Faults are FIFO, one per chat/generate request;
    load/unload-only requests (no messages / empty prompt) are not recorded and consume none.
    """

    def __init__(
        self,
        models: Sequence[str] = DEFAULT_MODELS,
        *,
        parallel: int = 1,
        max_queue: int = 512,
        latency: float = 0.0,
        load_delay: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.models: set[str] = {normalize(m) for m in models}
        self.latency, self.load_delay, self.max_queue = latency, load_delay, max_queue
        self.host, self.port = host, port
        self.responder: Responder | None = None
        # Names /api/pull can fetch; None: any name (a pull then adds it to ``models``).
        self.registry: set[str] | None = None
        self.pull_steps = 4  # progress lines per pulled layer
        self.requests: list[ChatRequest] = []
        # Like a proxy whose Ollama is away: every request answers 502 with nginx's page.
        self.bad_gateway = False
        self.peak_concurrency = 0
        # Chat requests open at once, counted on arrival, before the stand-in's own `parallel`
        # makes the extra ones wait: what a client asked for, not what it was given.
        self.peak_open = 0
        self._parallel, self._running, self._waiting = max(1, parallel), 0, 0
        self._cond = threading.Condition()  # guards the slot counters; wakes queued generations
        self._lock = threading.Lock()  # guards requests, faults and loaded models
        self._load_lock = threading.Lock()  # Ollama's scheduler loads one model at a time
        self._faults: deque[tuple[str, Any]] = deque()
        self._loaded: dict[str, float] = {}
        self._refs: Counter[str] = Counter()  # a model in use never expires
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> OllamaStandin:
        """Bind and serve; after ``stop()`` this restarts on the same port."""
        self._stopping.clear()
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        # A short poll interval keeps stop() fast: shutdown() waits for one poll.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name="ollama-standin",
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; stalled generations and queued requests are released."""
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.drop_connections()
            # Let the handler threads see the dropped connections and close their sockets,
            # so that none is left for the garbage collector to find open.
            deadline = time.monotonic() + 2.0
            while self._server.connections and time.monotonic() < deadline:
                time.sleep(0.01)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> OllamaStandin:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.port}"

    def _push(self, *faults: tuple[str, Any]) -> None:
        with self._lock:
            self._faults.extend(faults)

    def script_reply(self, content: str) -> None:
        """The next generation returns exactly ``content``."""
        self._push(("reply", content))

    def fail_next(self, status: int = 503, body: JSON | None = None, count: int = 1) -> None:
        """The next ``count`` generations answer ``status`` with ``body`` (an ``{"error": ...}``)."""
        default = BUSY if status == 503 else RUNNER_DIED if status == 500 else f"error {status}"
        self._push(*[("fail", (status, body or {"error": default}))] * count)

    def break_next(self, mode: Literal["error_line", "disconnect"] = "error_line") -> None:
        """The next generation streams a chunk or two, then an error line or a dropped socket."""
        self._push(("break", mode))

    def hang_next(self, seconds: float) -> None:
        """The next generation stalls ``seconds`` (holding its slot) before answering."""
        self._push(("hang", seconds))

    def clear_faults(self) -> None:
        """Drop every queued fault (``fail_next(count=0)`` queues nothing; this clears)."""
        with self._lock:
            self._faults.clear()

    @property
    def parallel(self) -> int:
        """Generations run at once (OLLAMA_NUM_PARALLEL); may change while running."""
        return self._parallel

    @parallel.setter
    def parallel(self, value: int) -> None:
        with self._cond:
            self._parallel = max(1, value)
            self._cond.notify_all()

    @property
    def in_flight(self) -> int:
        """Generations running right now (holding a slot)."""
        return self._running

    @property
    def waiting(self) -> int:
        """Generations queued for a slot."""
        return self._waiting

    @property
    def loaded(self) -> dict[str, float]:
        """Loaded model → expiry (epoch seconds; ``inf`` = forever)."""
        with self._lock:
            return dict(self._live())

    def reset_stats(self) -> None:
        """Forget recorded requests and peak concurrency (queued faults stay)."""
        with self._lock:
            self.requests.clear()
        with self._cond:
            self.peak_concurrency = self._running
            self.peak_open = self._running + self._waiting

    def has_model(self, name: str) -> bool:
        """Whether ``name`` is pulled (compared after normalising tags)."""
        return normalize(name) in {normalize(m) for m in set(self.models)}

    def _live(self) -> dict[str, float]:
        now = time.time()  # caller holds _lock
        for name, expiry in list(self._loaded.items()):
            if expiry <= now and not self._refs[name]:
                del self._loaded[name]
        return self._loaded

    def _use_model(self, name: str, keep: float) -> int:
        """Mark ``name`` in use, loading it first if needed; return the load time in ns."""
        t0 = time.monotonic_ns()
        with self._load_lock:
            with self._lock:
                present = name in self._live()
            if not present:
                self._stopping.wait(self.load_delay)
            with self._lock:
                self._refs[name] += 1
                self._loaded[name] = time.time() + keep
        return time.monotonic_ns() - t0

    def _done_with_model(self, name: str, keep: float) -> None:
        # Like Ollama, the keep-alive timer starts when the model's last user finishes.
        with self._lock:
            self._refs[name] -= 1
            if self._refs[name] <= 0:
                del self._refs[name]
                if keep == 0:
                    self._loaded.pop(name, None)
                else:
                    self._loaded[name] = time.time() + keep

    def _unload(self, name: str) -> None:
        with self._lock:
            if not self._refs[name]:
                self._loaded.pop(name, None)

    def _acquire_slot(self) -> bool:
        with self._cond:
            if self._running >= self._parallel and self._waiting >= self.max_queue:
                return False
            self._waiting += 1
            self.peak_open = max(self.peak_open, self._running + self._waiting)
            while self._running >= self._parallel and not self._stopping.is_set():
                self._cond.wait()
            self._waiting -= 1
            if self._stopping.is_set():
                return False
            self._running += 1
            self.peak_concurrency = max(self.peak_concurrency, self._running)
            return True

    def _release_slot(self) -> None:
        with self._cond:
            self._running -= 1
            self._cond.notify_all()

    def _record(self, req: ChatRequest) -> tuple[str, Any]:
        with self._lock:
            self.requests.append(req)
            return self._faults.popleft() if self._faults else ("", None)

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)  # stop() cuts every stall short


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stalled generation must never block interpreter exit
    # socketserver's listen backlog is 5: a client opening many requests at once (Node-RED's
    # http request node, a request per message) overflows it, and the kernel drops the extra
    # handshakes for a retransmit a second or more later. Go's server listens with the
    # system's maximum (net.core.somaxconn, 4096 on current Linux).
    request_queue_size = 4096

    def __init__(self, address: tuple[str, int], standin: OllamaStandin) -> None:
        super().__init__(address, _Handler)
        self.standin = standin
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    def track(self, conn: socket.socket, is_open: bool) -> None:
        with self.connections_lock:
            (self.connections.add if is_open else self.connections.discard)(conn)

    def drop_connections(self) -> None:
        # A real restart kills keep-alive connections too; otherwise a pooled client
        # would keep talking to a "stopped" server.
        with self.connections_lock:
            for conn in self.connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)


def _parse_body(raw: bytes) -> JSON:
    text = raw.decode("utf-8", "replace")
    if not text.strip():
        raise _HTTPError(400, "missing request body")
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:  # Go's encoding/json wording
        if exc.pos >= len(text):
            raise _HTTPError(400, "unexpected EOF") from exc
        raise _HTTPError(400, f"invalid character {text[exc.pos]!r} looking for beginning of value") from exc
    if not isinstance(body, dict):
        raise _HTTPError(400, f"json: cannot unmarshal {type(body).__name__} into Go value")
    return body


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked NDJSON, like the Go server
    # Go's net/http sets TCP_NODELAY; without it each small NDJSON chunk waits on delayed ACKs.
    disable_nagle_algorithm = True
    _headers_buffer: list[bytes]  # BaseHTTPRequestHandler's, not in its type stubs
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: tests and benchmarks must not be flooded with access logs."""

    def handle(self) -> None:
        self.server.track(self.connection, True)
        try:  # a client hanging up mid-response must not take the server thread down
            with contextlib.suppress(BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
                super().handle()
        finally:
            self.server.track(self.connection, False)

    def _send(self, status: int, body: bytes, ctype: str = "application/json; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self._headers_buffer.append(b"\r\n")
        self._write(body)

    def _write(self, data: bytes) -> None:
        """Send `data`, with the headers if they are still waiting, in one write: like Go's
        server, which sends a small answer in one packet. Two writes make a client without
        TCP_NODELAY wait out a delayed ACK."""
        if self._headers_buffer:
            data = b"".join(self._headers_buffer) + data
            self._headers_buffer.clear()
        self.wfile.write(data)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj).encode())

    def _chunk(self, obj: JSON, *, last: bool = False) -> None:
        data = json.dumps(obj).encode() + b"\n"
        self._write(b"%x\r\n%s\r\n%s" % (len(data), data, b"0\r\n\r\n" if last else b""))

    def _gateway_down(self) -> bool:
        if not self.server.standin.bad_gateway:
            return False
        self._send(502, BAD_GATEWAY.encode(), "text/html")
        return True

    def do_HEAD(self) -> None:
        """HEAD / is the Ollama CLI's heartbeat."""
        if not self._gateway_down():
            self._send(200, b"", "text/plain; charset=utf-8")

    def do_GET(self) -> None:
        """Serve /, /api/version, /api/tags and /api/ps."""
        sd, path = self.server.standin, self.path.split("?")[0]
        if self._gateway_down():
            return
        if path == "/":
            self._send(200, b"Ollama is running", "text/plain; charset=utf-8")
        elif path == "/api/version":
            self._json(200, {"version": VERSION})
        elif path in ("/api/tags", "/api/ps"):
            pulled = {normalize(m) for m in set(sd.models)}
            live = sd.loaded if path == "/api/ps" else dict.fromkeys(pulled, 0.0)
            out = []
            for name, expiry in sorted(live.items()):
                m = model_meta(name)
                row = {"name": name, "model": name, **{k: m[k] for k in ("size", "digest", "details")}}
                extra = {"size_vram": m["size"], "expires_at": _iso(expiry), "context_length": m["context"]}
                out.append(row | (extra if path == "/api/ps" else {"modified_at": _iso()}))
            self._json(200, {"models": out})
        else:
            self._send(404, b"404 page not found", "text/plain")

    def do_POST(self) -> None:
        """Serve /api/chat, /api/generate, /api/embed, /api/show and /api/pull."""
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))  # drain first: keep-alive
        if self._gateway_down():
            return
        path = self.path.split("?")[0]
        routes: dict[str, Callable[[JSON], None]] = {
            "/api/chat": lambda b: self._generate(b, "chat"),
            "/api/generate": lambda b: self._generate(b, "generate"),
            "/api/embed": self._embed,
            "/api/show": self._show,
            "/api/pull": self._pull,
        }
        if path not in routes:
            self._send(404, b"404 page not found", "text/plain")
            return
        try:
            routes[path](_parse_body(raw))
        except _HTTPError as exc:
            self._json(exc.status, {"error": exc.message})

    def _model(self, body: JSON, missing: str = 'model "{}" not found, try pulling it first') -> str:
        name = body.get("model") or body.get("name")
        if not isinstance(name, str) or not name:
            raise _HTTPError(400, "model is required")
        if not self.server.standin.has_model(name):
            raise _HTTPError(404, missing.format(name))
        return name

    def _show(self, body: JSON) -> None:
        m = model_meta(self._model(body, "model '{}' not found"))  # /api/show words it differently
        fam = m["family"]
        info = {
            "general.architecture": fam,
            "general.parameter_count": m["params"],
            "general.file_type": 15,
            f"{fam}.context_length": m["context"],
            f"{fam}.embedding_length": 2048,
        }
        self._json(
            200,
            {
                "license": "",
                "modelfile": f"FROM {m['name']}\n",
                "parameters": "temperature 0.7",
                "template": "{{ .Prompt }}",
                "details": m["details"],
                "model_info": info,
                "capabilities": m["capabilities"],
                "modified_at": _iso(),
            },
        )

    def _pull(self, body: JSON) -> None:
        """Stream a pull as Ollama does: manifest, layer progress, verify, write, success."""
        sd, name = self.server.standin, body.get("model") or body.get("name")
        if not isinstance(name, str) or not name:
            raise _HTTPError(400, "model is required")
        known = sd.registry is None or normalize(name) in {normalize(m) for m in sd.registry}
        stream = body.get("stream") is not False
        if not stream:
            if not known:
                raise _HTTPError(500, "pull model manifest: file does not exist")
            sd._sleep(sd.latency)
            with sd._lock:
                sd.models.add(normalize(name))
            self._json(200, {"status": "success"})
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._chunk({"status": "pulling manifest"})
        if not known:  # after the stream began, an error is a line, as from the real server
            self._chunk({"error": "pull model manifest: file does not exist"})
            self.wfile.write(b"0\r\n\r\n")
            return
        meta = model_meta(name)
        digest, total = f"sha256:{meta['digest']}", meta["size"]
        for step in range(sd.pull_steps + 1):
            completed = total * step // sd.pull_steps
            self._chunk(
                {
                    "status": f"pulling {meta['digest'][:12]}",
                    "digest": digest,
                    "total": total,
                    "completed": completed,
                }
            )
            sd._sleep(sd.latency / max(1, sd.pull_steps))
        for status in ("verifying sha256 digest", "writing manifest"):
            self._chunk({"status": status})
        with sd._lock:
            sd.models.add(normalize(name))
        self._chunk({"status": "success"})
        self.wfile.write(b"0\r\n\r\n")

    def _embed(self, body: JSON) -> None:
        sd, start, name = self.server.standin, time.monotonic_ns(), self._model(body)
        keep = parse_keep_alive(body.get("keep_alive"))
        given = body.get("input", [])
        texts = [given] if isinstance(given, str) else [str(t) for t in given]
        load_ns = sd._use_model(normalize(name), keep)
        sd._done_with_model(normalize(name), keep)
        self._json(
            200,
            {
                "model": name,
                "embeddings": [embed_text(t) for t in texts],
                "total_duration": time.monotonic_ns() - start,
                "load_duration": max(1, load_ns),
                "prompt_eval_count": sum(len(t) // 4 + 1 for t in texts),
            },
        )

    def _generate(self, body: JSON, endpoint: Literal["chat", "generate"]) -> None:
        sd, start, name = self.server.standin, time.monotonic_ns(), self._model(body)
        key = normalize(name)
        if "completion" not in model_meta(name)["capabilities"]:
            raise _HTTPError(400, f'"{name}" does not support {endpoint}')
        keep = parse_keep_alive(body.get("keep_alive"))
        if endpoint == "chat":
            messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
            empty = not messages
        else:
            messages = [{"role": "system", "content": body["system"]}] if body.get("system") else []
            messages.append(
                {"role": "user", "content": str(body.get("prompt") or ""), "images": body.get("images") or []}
            )
            empty = not body.get("prompt")
        if empty:  # preload (or keep_alive=0: unload) request, answered with one JSON object
            if keep == 0:
                sd._unload(key)
            else:
                sd._use_model(key, keep)
                sd._done_with_model(key, keep)
            reason = {"done_reason": "load" if keep else "unload"}
            self._json(200, self._piece(endpoint, name, "", True) | reason)
            return
        loaded = [_load_image(i) for m in messages for i in (m.get("images") or [])]
        options = body.get("options")
        last_user = next((m for m in reversed(messages) if m.get("role") == "user"), {})
        req = ChatRequest(
            model=name,
            messages=messages,
            format=body.get("format") or None,
            options=options if isinstance(options, dict) else {},
            keep_alive=body.get("keep_alive"),
            images=[d for d, _ in loaded],
            brightness=[b for _, b in loaded],
            endpoint=endpoint,
            text=str(last_user.get("content") or ""),
            stream=body.get("stream") is not False,
        )
        kind, arg = sd._record(req)
        if kind == "fail":
            self._json(arg[0], arg[1])
            return
        if not sd._acquire_slot():
            raise _HTTPError(503, BUSY)
        finished = False

        def finish() -> None:
            # Runs before the last byte is written, so a client holding the full answer
            # already sees the slot free and a keep_alive=0 model gone from /api/ps.
            nonlocal finished
            if not finished:
                finished = True
                sd._done_with_model(key, keep)
                sd._release_slot()

        try:
            load_ns = sd._use_model(key, keep)
            sd._sleep(float(arg) if kind == "hang" else 0.0)
            if sd._stopping.is_set():  # stopped while stalled: a killed server sends nothing more
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            try:
                content = str(arg) if kind == "reply" else (sd.responder or default_reply)(req)
            except Exception as exc:  # a broken test responder becomes a 500, not a dead thread
                raise _HTTPError(500, f"responder failed: {exc!r}") from exc
            self._emit(req, content, start, load_ns, arg if kind == "break" else None, finish)
        finally:
            finish()

    @staticmethod
    def _piece(endpoint: str, model: str, text: str, done: bool) -> JSON:
        msg: JSON = {"message": {"role": "assistant", "content": text}} if endpoint == "chat" else {}
        return {"model": model, "created_at": _iso(), **(msg or {"response": text}), "done": done}

    def _emit(
        self,
        req: ChatRequest,
        content: str,
        start: int,
        load_ns: int,
        brk: str | None,
        finish: Callable[[], None],
    ) -> None:
        sd, gen_start = self.server.standin, time.monotonic_ns()
        latency = sd.latency
        # Deterministic token estimates: ~4 characters a token, 256 tokens an image.
        chars = sum(len(str(m.get("content") or "")) for m in req.messages)
        prompt_tokens = chars // 4 + 256 * len(req.images)

        def final(text: str) -> JSON:
            gen_ns = time.monotonic_ns() - gen_start
            return self._piece(req.endpoint, req.model, text, True) | {
                "done_reason": "stop",
                "total_duration": time.monotonic_ns() - start,
                "load_duration": max(1, load_ns),
                "prompt_eval_count": max(1, prompt_tokens),
                "prompt_eval_duration": max(1, gen_ns // 5),
                "eval_count": len(content) // 4 + 1,
                "eval_duration": max(1, gen_ns - gen_ns // 5),
            }

        if not req.stream:
            # Ollama stops generating when the client hangs up, streamed or not.
            if not self._generate_while_connected(latency):
                self.close_connection = True
                return
            if brk == "error_line":
                raise _HTTPError(500, MIDSTREAM_ERROR)
            if brk is None:
                answer = final(content)
                finish()
                self._json(200, answer)
                return
        else:
            sd._sleep(latency * 0.2)  # prompt evaluation happens before the first token
            size = max(1, math.ceil(len(content) / 4))
            pieces = [content[i : i + size] for i in range(0, len(content), size)] or [""]
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("Transfer-Encoding", "chunked")
            self._headers_buffer.append(b"\r\n")  # sent with the first chunk
            for text in pieces[: 2 if brk else None]:
                self._chunk(self._piece(req.endpoint, req.model, text, False))
                sd._sleep(latency * 0.8 / len(pieces))
            if brk != "disconnect":
                # Real Ollama reports a mid-stream failure as an NDJSON error line.
                last = {"error": MIDSTREAM_ERROR} if brk else final("")
                finish()
                self._chunk(last, last=True)
                return
        finish()
        # Drop the connection without a final chunk, as when the runner crashes.
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _generate_while_connected(self, seconds: float) -> bool:
        """Stall `seconds` as a generation does; False as soon as the client has hung up."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0 and not self.server.standin._stopping.is_set():
            readable, _, _ = select.select([self.connection], [], [], min(left, 0.1))
            if readable:
                try:
                    if not self.connection.recv(1, socket.MSG_PEEK):
                        return False
                except OSError:
                    return False
                self.server.standin._stopping.wait(min(left, 0.1))  # a pipelined request waits
        return True


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point: serve until Ctrl-C."""
    p = argparse.ArgumentParser(description="Ollama stand-in server for tests and benchmarks")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=11434)
    p.add_argument("--latency", type=float, default=0.0, help="seconds per generation")
    p.add_argument("--load-delay", type=float, default=0.0, help="seconds to load a model")
    p.add_argument("--parallel", type=int, default=1)
    p.add_argument("--max-queue", type=int, default=512)
    p.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated model names")
    a = p.parse_args(argv)
    standin = OllamaStandin(
        [m for m in a.models.split(",") if m],
        parallel=a.parallel,
        max_queue=a.max_queue,
        latency=a.latency,
        load_delay=a.load_delay,
        host=a.host,
        port=a.port,
    )
    with standin:
        print(f"ollama stand-in listening on {standin.url}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()

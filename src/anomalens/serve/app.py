"""``anomalens serve RUN_DIR [RUN_DIR ...]``: the what-if explorer as a small Starlette app.

Routes: ``/`` (the page), ``/style.css``, ``/app.js``, and a JSON API the page calls:
``GET /api/info``, ``GET /api/runs/{run}/examples``, ``POST /api/upload?run=N`` (the file as the
raw request body, its name in ``X-Filename``), ``GET /api/runs/{run}/analyze|counterfactuals|repair``
with ``ref`` (an image reference) and ``alpha``. Errors come back as ``{"error": message}`` with a
4xx status (5xx with no details for bugs, whose traceback goes to the server's log), so the page
shows a sentence, never a stack trace. It binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from anomalens.errors import AnomalensError, ConfigError
from anomalens.experiments.run_explainers import RunExplainers
from anomalens.serve.page import PAGE, SCRIPT, STYLE
from anomalens.serve.whatif import MAX_UPLOAD_BYTES, UploadTooLarge, WhatIf, float_param

try:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route
except ImportError as e:  # the core install stays lean: the web app is the optional extra
    raise AnomalensError(f"`anomalens serve` needs the optional web packages ({e.name} is missing). Fix: pip install "
                         "'anomalens[serve]'") from None

# Only this server's own origin: no CDN, no web font, no outside request of any kind.
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
DRAIN_LIMIT = 8 * MAX_UPLOAD_BYTES  # an oversized upload up to this size is read and discarded, then refused
log = logging.getLogger(__name__)


def _static(body: str, media_type: str) -> Callable[[Request], Response]:
    async def endpoint(request: Request) -> Response:
        return Response(body, media_type=media_type, headers={"Cache-Control": "no-store"})
    return endpoint


def _json_endpoint(whatif: WhatIf, method: str) -> Callable[[Request], Any]:
    """GET /api/runs/{run}/<method>?ref=...&alpha=...: the computation runs in a worker thread."""
    async def endpoint(request: Request) -> JSONResponse:
        run = request.path_params["run"]
        ref = request.query_params.get("ref", "")
        if method == "examples":
            return JSONResponse(await run_in_threadpool(whatif.examples, run))
        if not ref:
            raise ConfigError("no image chosen. Fix: pick a test image or upload one")
        if method == "repair":
            return JSONResponse(await run_in_threadpool(whatif.repair, run, ref))
        alpha = float_param(request.query_params.get("alpha"), "alpha", 0.0)
        compute = whatif.analyze if method == "analyze" else whatif.counterfactuals
        return JSONResponse(await run_in_threadpool(compute, run, ref, alpha))
    return endpoint


async def _upload(request: Request) -> JSONResponse:
    """The raw body, refused when it passes ``MAX_UPLOAD_BYTES``; a body above ``DRAIN_LIMIT`` is refused
    without reading it to the end."""
    whatif: WhatIf = request.app.state.whatif
    name = unquote(request.headers.get("x-filename", "upload"))[:200] or "upload"
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > DRAIN_LIMIT:
        raise UploadTooLarge(name, int(declared))  # answered at once (the client may see the connection close)
    body, received = bytearray(), 0
    async for chunk in request.stream():
        received += len(chunk)
        if received <= MAX_UPLOAD_BYTES:
            body += chunk
        elif received > DRAIN_LIMIT:
            break
    if received > MAX_UPLOAD_BYTES:  # read to the end first, so that the client receives the message
        raise UploadTooLarge(name, received if received <= DRAIN_LIMIT else None)
    if not body:
        raise ConfigError(f"{name} is empty. Fix: choose an image file")
    run = int(float_param(request.query_params.get("run"), "run", 0))
    return JSONResponse(await run_in_threadpool(whatif.upload, bytes(body), name, run))


async def _user_error(request: Request, error: Exception) -> JSONResponse:
    status = 413 if isinstance(error, UploadTooLarge) else 400
    return JSONResponse({"error": " ".join(str(error).split())}, status_code=status)


async def _bug(request: Request, error: Exception) -> JSONResponse:
    log.error(f"{request.url.path}: unexpected {type(error).__name__}", exc_info=error)
    return JSONResponse({"error": f"internal error ({type(error).__name__}); the server's log has the details"},
                        status_code=500)


def create_app(whatif: WhatIf) -> Starlette:
    routes = [Route("/", _static(PAGE, "text/html; charset=utf-8")),
              Route("/style.css", _static(STYLE, "text/css; charset=utf-8")),
              Route("/app.js", _static(SCRIPT, "text/javascript; charset=utf-8")),
              Route("/favicon.ico", lambda request: Response(status_code=204)),
              Route("/api/info", lambda request: JSONResponse(whatif.info())),
              Route("/api/upload", _upload, methods=["POST"])]
    routes += [Route(f"/api/runs/{{run:int}}/{method}", _json_endpoint(whatif, method))
               for method in ("examples", "analyze", "counterfactuals", "repair")]
    app = Starlette(routes=routes, exception_handlers={AnomalensError: _user_error, Exception: _bug},
                    middleware=[Middleware(_SecurityHeaders)])
    app.state.whatif = whatif
    return app


class _SecurityHeaders:
    """ASGI middleware adding the Content-Security-Policy (and nosniff) to every response."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"content-security-policy", CSP.encode()),
                                      (b"x-content-type-options", b"nosniff")]
            await send(message)
        await self.app(scope, receive, send_with_headers if scope["type"] == "http" else send)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({e.strerror or e}). Fix: pass another --port, or stop "
                          "the program using it") from None
    return sock


def load_whatif(run_dirs: Sequence[str | Path]) -> WhatIf:
    """The explorer's state for these run folders; a folder that is no run is refused here, a run
    without explainers only warned about (the page says what is missing)."""
    whatif = WhatIf([RunExplainers.load(d) for d in run_dirs])
    whatif.prepare()
    return whatif


class Server:
    """A running explorer: ``Server(whatif, host, port).start()`` serves from a background thread
    (``url``, ``stop()``); ``run()`` serves in the foreground until Ctrl-C."""

    def __init__(self, whatif: WhatIf, host: str = "127.0.0.1", port: int = 8000, sock: socket.socket | None = None):
        self.socket = sock or _bind(host, port)
        self.host, self.port = host, self.socket.getsockname()[1]
        config = uvicorn.Config(create_app(whatif), log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def run(self) -> None:
        self.server.run(sockets=[self.socket])

    def start(self, timeout: float = 20.0) -> Server:
        self.thread = threading.Thread(target=self.run, name="anomalens-serve", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"the server did not start within {timeout:g} s")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(10)
        self.socket.close()


def serve(run_dirs: Sequence[str | Path], host: str = "127.0.0.1", port: int = 8000) -> None:
    """Load the runs and serve the explorer until Ctrl-C."""
    sock = _bind(host, port)  # a busy port is reported before the (slower) loading of the runs
    server = Server(load_whatif(run_dirs), host, port, sock)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning(f"listening on {host}: anyone who can reach this machine can use the explorer and upload files")
    log.info(f"what-if explorer for {len(run_dirs)} run(s): open {server.url} (Ctrl-C stops it)")
    server.run()

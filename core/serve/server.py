"""HTTP for ``diffuspeech serve``: the standard library's threading server around :class:`ServeApp`.

    GET  /                      the page (static/index.html; every asset served from the package)
    GET  /static/<file>         app.js, style.css
    GET  /api/model             the model's tasks, components (provenance), decoding defaults
    POST /api/generate          multipart form: task, audio (wav) or text, knobs -> JSON
    POST /api/stream            the same form -> server-sent events (text / audio chunks, then done)
    GET  /api/audio/<id>.wav    a generated answer

Errors answer a 4xx/5xx status with ``{"error": "..."}``.
"""

from __future__ import annotations

import json
import mimetypes
import traceback
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .app import RequestError, ServeApp

STATIC = Path(__file__).with_name("static")
STATIC_FILES = ("index.html", "app.js", "style.css")  # the only files served from it


def parse_multipart(content_type: str, body: bytes) -> dict[str, Any]:
    """``multipart/form-data`` -> ``{name: str}`` for fields, ``{name: bytes}`` for files."""
    if not content_type.startswith("multipart/form-data"):
        raise RequestError("the request must be multipart/form-data (fields task, audio or text, and decoding knobs)", 415)
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    if not message.is_multipart():
        raise RequestError("the multipart body could not be parsed (no parts)", 400)
    form: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        payload = part.get_payload(decode=True) or b""
        form[name] = payload if part.get_filename() is not None else payload.decode("utf-8", errors="replace")
    return form


def make_handler(app: ServeApp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "diffuspeech-serve"
        timeout = 60  # seconds a connection may stall (a slow upload does not hold a thread forever)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            if getattr(self.server, "verbose", False):
                super().log_message(format, *args)

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, obj: Any) -> None:
            self._send(status, json.dumps(obj).encode(), "application/json")

        def _error(self, exc: Exception) -> None:
            if isinstance(exc, RequestError):
                self._json(exc.status, {"error": str(exc)})
            else:
                traceback.print_exc()
                self._json(500, {"error": f"internal error: {type(exc).__name__}: {exc}"})

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            path = self.path.split("?", 1)[0]
            try:
                if path in ("/", "/index.html"):
                    return self._send(200, (STATIC / "index.html").read_bytes(), "text/html; charset=utf-8")
                if path.startswith("/static/"):
                    name = path[len("/static/"):]
                    file = STATIC / name
                    if name not in STATIC_FILES or not file.is_file():
                        raise RequestError(f"no static file {name!r}", 404)
                    return self._send(200, file.read_bytes(), (mimetypes.guess_type(name)[0] or "application/octet-stream"))
                if path == "/api/model":
                    return self._json(200, app.model_info())
                if path.startswith("/api/audio/") and path.endswith(".wav"):
                    key = path[len("/api/audio/"):-4]
                    data = app.audio.get(key)
                    if data is None:
                        raise RequestError(f"no generated audio {key!r} (the server keeps the latest answers only)", 404)
                    return self._send(200, data, "audio/wav")
                raise RequestError(f"no such page: {path}", 404)
            except Exception as exc:  # noqa: BLE001 - every error becomes a JSON answer
                self._error(exc)

        def _form(self) -> dict[str, Any]:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                raise RequestError("Content-Length must be a number", 400) from None
            limit = app.max_upload_bytes + (1 << 20)  # the audio plus the form fields
            if length > limit:
                raise RequestError(f"the request is {length} bytes, over the {limit} byte limit (audio up to {app.max_upload_bytes})", 413)
            if length <= 0:
                raise RequestError("empty request: send a multipart form with task and audio or text", 400)
            return parse_multipart(self.headers.get("Content-Type", ""), self.rfile.read(length))

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            path = self.path.split("?", 1)[0]
            try:
                if path == "/api/generate":
                    return self._json(200, app.generate(self._form()))
                if path == "/api/stream":
                    events = app.stream(app.parse(self._form()))  # form errors answer a 4xx before any header
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Cache-Control", "no-store")
                    self.end_headers()
                    try:
                        for event in events:
                            self.wfile.write(f"event: {event['kind']}\ndata: {json.dumps(event)}\n\n".encode())
                            self.wfile.flush()
                    except (BrokenPipeError, ConnectionResetError):
                        pass  # the client went away
                    return None
                raise RequestError(f"no such endpoint: POST {path}", 404)
            except Exception as exc:  # noqa: BLE001 - every error becomes a JSON answer
                self._error(exc)

    return Handler


def make_server(app: ServeApp, host: str = "127.0.0.1", port: int = 8000, verbose: bool = False) -> ThreadingHTTPServer:
    """A ready (not yet serving) server; port 0 picks a free one (``server.server_address``)."""
    server = ThreadingHTTPServer((host, port), make_handler(app))
    server.daemon_threads = True
    server.verbose = verbose
    return server

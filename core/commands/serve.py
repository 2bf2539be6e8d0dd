"""``diffuspeech serve``: a local page to talk to a model and watch it denoise (see ``diffuspeech.serve``)."""

from __future__ import annotations

import sys

from ..model import model_help


def configure(p) -> None:
    p.add_argument("--model", help=model_help())
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--max-seconds", type=float, default=30.0, help="longest question accepted, seconds (default 30)")
    p.add_argument("--verbose", action="store_true", help="log every request")
    p.add_argument("overrides", nargs="*", default=[], help="model config overrides key=value (e.g. generation.steps=8)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..pipeline import Pipeline
    from ..serve import ServeApp, make_server

    pipe = Pipeline.from_pretrained(args.model, list(args.overrides), args.device)
    app = ServeApp(pipe, model_name=args.model or "default", max_seconds=args.max_seconds)
    try:
        server = make_server(app, args.host, args.port, verbose=args.verbose)
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port} ({exc.strerror or exc}); pick another --port", file=sys.stderr)
        return 2
    host, port = server.server_address[:2]
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}: anyone who can reach this machine can use the model", file=sys.stderr)
    print(f"diffuspeech serve: http://{host}:{port}/  (model {app.model_name}; Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0

"""The ``diffuspeech`` command line, built from the commands registered through ``register_commands``.

Core's commands (``diffuspeech.commands``), the plugins' (``fit-quantizer``, ``train-vocoder``,
...) and the recipes' (``demo``, ``eval arith``, ...) all arrive through the same hook. Only the
command being run is configured (its module imported), so ``diffuspeech --help`` stays fast
and imports no engine.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__
from .errors import ConfigError, UserError
from .registry import Registration, get_registry, resolve_ref


def _chosen(argv: Sequence[str], names: set[str]) -> str | None:
    """The registered command the leading words of ``argv`` name (the longest match)."""
    words = []
    for token in argv:
        if token.startswith("-"):
            break
        words.append(token)
    for n in range(len(words), 0, -1):
        name = " ".join(words[:n])
        if name in names:
            return name
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser for ``argv``: every command listed, the one ``argv`` names configured."""
    argv = sys.argv[1:] if argv is None else list(argv)
    commands: dict[str, Registration] = {r.name: r for r in get_registry().registrations("commands")}
    chosen = _chosen(argv, set(commands))
    parser = argparse.ArgumentParser(
        prog="diffuspeech",
        description="Speech language models on masked discrete diffusion, composed from plugins.",
    )
    parser.add_argument("--version", action="version", version=f"diffuspeech {__version__}")
    parser.add_argument("--debug", action="store_true", help=f"show the traceback behind an error (or set {DEBUG_ENV}=1)")
    top = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {"": top}
    members: dict[str, list[str]] = {}
    for name in commands:
        words = name.split()
        for depth in range(1, len(words)):
            members.setdefault(" ".join(words[:depth]), []).append(words[depth])
    for name in sorted(commands):
        words = name.split()
        for depth in range(1, len(words)):
            prefix = " ".join(words[:depth])
            if prefix in commands:
                raise SystemExit(f"diffuspeech: command {prefix!r} is also a group of {name!r}; rename one (plugins: "
                                 f"{commands[prefix].plugin}, {commands[name].plugin})")
            if prefix not in groups:
                parent = groups[" ".join(words[: depth - 1])]
                sub_names = ", ".join(sorted(set(members[prefix])))
                g = parent.add_parser(words[depth - 1], help=f"{sub_names}", description=f"diffuspeech {prefix}: {sub_names}")
                groups[prefix] = g.add_subparsers(dest=f"command_{depth}", metavar="ACTION", required=True)
        reg = commands[name]
        help_ = reg.info.get("help", "")
        p = groups[" ".join(words[:-1])].add_parser(words[-1], help=help_, description=reg.info.get("description") or help_)
        if name == chosen:
            resolve_ref(reg.cls)(p)
    return parser


def _one_line_warnings() -> None:
    """Framework warnings as ``warning: <message>`` lines on stderr, without source lines."""
    import warnings

    from .compose import ConfigWarning

    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, ConfigWarning):
            print(f"warning: {message}", file=sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    warnings.showwarning = show


DEBUG_ENV = "DIFFUSPEECH_DEBUG"  # set to 1 (or pass --debug) to see the traceback behind an error line


def error_line(exc: BaseException) -> str | None:
    """The one line a user sees for an expected failure, or None for a bug (which keeps its traceback)."""
    import errno

    if isinstance(exc, ConfigError):
        return f"config error: {exc}"
    if isinstance(exc, UserError):
        return f"error: {exc}"
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        where = f" writing {exc.filename}" if getattr(exc, "filename", None) else ""
        return f"error: out of disk space{where}; free some space and run again (written files were left as they were)"
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"error: no permission for {exc.filename or 'a file'} ({exc.strerror}); check the path and its permissions"
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError)):
        return f"error: {exc.strerror or exc}: {exc.filename}" if getattr(exc, "filename", None) else f"error: {exc}"
    if type(exc).__name__ == "SafetensorError":
        return f"error: a weights file could not be read or written ({exc}); it is truncated, not safetensors, or the disk is full"
    if isinstance(exc, RuntimeError) and "CUDA" in str(exc) and ("available" in str(exc) or "driver" in str(exc)):
        return f"error: {str(exc).splitlines()[0]}; run on the CPU (device=cpu) or on a machine with a GPU"
    return None


def main(argv: list[str] | None = None) -> int:
    import os

    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    _one_line_warnings()
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # `diffuspeech plugins | head`: the reader left; not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one error boundary: expected failures become one line
        line = error_line(exc)
        if line is None or debug:
            raise
        print(line, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

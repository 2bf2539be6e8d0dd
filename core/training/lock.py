"""One training per run folder: ``<out>/.lock`` holds the PID of the process that trains there.

A second ``diffuspeech train`` on the same ``--out`` is refused with the holder's PID; a lock left
by a process that no longer runs (a crash, ``kill -9``) is taken over with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path

from ..errors import UserError

__all__ = ["LOCK_FILE", "RunLock", "RunLockedError"]

LOCK_FILE = ".lock"
log = logging.getLogger("diffuspeech.train")


class RunLockedError(UserError):
    """Another live process trains in this run folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    """``with RunLock(out):`` around a training; re-entrant for the process that holds it."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.held = False

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                pid, host = holder.get("pid"), holder.get("host")
                if pid == os.getpid() and host == record["host"]:
                    return  # ours already
                if isinstance(pid, int) and host == record["host"] and _alive(pid):
                    raise RunLockedError(
                        f"{self.path.parent} is being trained by process {pid} (since {holder.get('started', '?')}); wait for it "
                        f"to finish or stop it, or train into another --out (a lock of a process that no longer runs is taken over)"
                    ) from None
                if isinstance(pid, int) and host not in (None, record["host"]):
                    raise RunLockedError(
                        f"{self.path.parent} is locked by process {pid} on host {host}; train into another --out, or delete "
                        f"{self.path} if that training is over"
                    ) from None
                log.warning(f"taking over the stale lock of process {pid} in {self.path.parent} (it no longer runs)")
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(record, f)
            self.held = True
            return
        raise RunLockedError(f"{self.path}: could not take the run-folder lock (another process keeps creating it)")

    def _holder(self) -> dict:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}  # a half-written lock: its writer died before finishing it

    def release(self) -> None:
        if self.held and self._holder().get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

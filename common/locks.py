"""One run per output folder: the pipeline and every stage script hold `<output root>/.ohlora.lock` while they write.

The lock is an advisory `flock` on that file, so the kernel drops it when its holder dies (SIGKILL, OOM killer, power
cut of a container): a lock left by a killed run is taken over, with a line saying so. The file records who holds it
(pid, start time, command) so that a second run stops at once with one line naming the holder. The pipeline passes its
lock token to the stage scripts it starts (OHLORA_LOCK_TOKEN), which then run under their parent's lock.

Only scripts take the lock (`run_main` arms it, the config resolution of the script's own flags takes it); library
code and tests that call the stages' functions directly do not.
"""

from __future__ import annotations

import atexit
import datetime as dt
import fcntl
import json
import os
import sys
import uuid
from pathlib import Path

from common.artifacts import LOCK_FILE
from common.errors import PipelineError

LOCK_NAME = LOCK_FILE
LOCK_TOKEN_ENV = "OHLORA_LOCK_TOKEN"

_armed = False
_held: dict[Path, int] = {}


def arm() -> None:
    """Called by the run scripts' entry point: this process is a script, so it locks the folder it writes."""
    global _armed
    _armed = True


def armed() -> bool:
    return _armed


def _read_holder(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 65536).decode("utf-8", "replace").strip()
    try:
        holder = json.loads(text) if text else {}
    except json.JSONDecodeError:
        holder = {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict) -> str:
    if not holder:
        return "a process that did not say who it is"
    return (f"pid {holder.get('pid', '?')}, started {holder.get('started', '?')}: "
            f"{holder.get('command', '?')}")


def hold_output_lock(root: str | Path, log=print) -> bool:
    """Take the lock of `root` for the rest of this process (True), or run under the parent pipeline's lock (False).
    Another live holder: PipelineError naming it."""
    root = Path(root).resolve()
    if root in _held:
        return True
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    holder = _read_holder(fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        token = os.environ.get(LOCK_TOKEN_ENV)
        if token and holder.get("token") == token:
            return False  # started by the pipeline run that holds the lock
        raise PipelineError(
            f"{root}: another run is writing in this folder ({_describe(holder)}); wait for it to finish or stop "
            f"it, or give this run its own folder with --output-root DIR") from None
    if holder:
        log(f"note: {path}: taking over the lock of a run that ended without releasing it ({_describe(holder)})")
    token = uuid.uuid4().hex
    record = {"pid": os.getpid(), "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
              "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "token": token}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(record) + "\n").encode())
    os.fsync(fd)
    os.environ[LOCK_TOKEN_ENV] = token
    _held[root] = fd
    return True


def release_output_lock(root: str | Path) -> None:
    """Give the lock back (the file is emptied: an empty lock file means nobody holds it)."""
    fd = _held.pop(Path(root).resolve(), None)
    if fd is None:
        return
    try:
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@atexit.register
def _release_all() -> None:
    for root in list(_held):
        release_output_lock(root)

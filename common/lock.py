"""One owner per output folder: an advisory lock on ``<folder>/.ptt-lock`` that the kernel drops when its owner dies.

A run directory, a curation ``out=`` folder and a sample folder are each written by one process at a time. A
second process that asks for the same folder gets :class:`FolderBusyError`, a one-line message naming the owner's
pid, host and command, instead of silently interleaving its files with the first one's. The lock is
``fcntl.flock`` on a file inside the folder, so a ``kill -9`` or a power cut leaves nothing stale: the next run
simply takes it. The file itself stays (an empty lock file is harmless; removing it would let two processes lock
two different inodes of the same name). Locks are per open file description, so a second ``FolderLock`` on the
same folder in the same process is refused too.

Example::

    from pathlib import Path
    from common.lock import FolderBusyError, folder_lock
    with folder_lock(Path("/tmp/run")):
        ...  # write the run; another process calling folder_lock(Path("/tmp/run")) now gets FolderBusyError
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["LOCK_NAME", "FolderBusyError", "FolderLock", "folder_lock", "lock_on_main_process", "lock_owner"]

LOCK_NAME = ".ptt-lock"


class FolderBusyError(RuntimeError):
    """Another live process owns the folder (the message names it and says what to do)."""


def lock_owner(folder: str | os.PathLike) -> dict:
    """What the lock file of ``folder`` says about its (last) owner: pid, host, command, started; {} if unreadable."""
    try:
        owner = json.loads((Path(folder) / LOCK_NAME).read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


class FolderLock:
    """The held lock of one folder; :meth:`release` (or process exit, or death) gives it up."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FolderBusyError(_busy_line(self.folder)) from None
        except OSError:
            os.close(fd)
            raise
        self._fd: int | None = fd
        owner = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300] if sys.argv else "",
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(owner, ensure_ascii=False) + "\n").encode(), 0)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self):  # a lock object dropped without release() must not keep the folder busy
        with contextlib.suppress(Exception):
            self.release()


def _busy_line(folder: Path) -> str:
    owner = lock_owner(folder)
    who = f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}"
    if owner.get("command"):
        who += f" ({owner['command']}"
        who += f", since {owner['started']})" if owner.get("started") else ")"
    return (
        f"{folder} is in use by another process: {who}; wait for it to finish (or stop it), "
        "or choose another folder. Two processes writing one folder would mix their files."
    )


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[FolderLock]:
    """Hold ``folder``'s lock for the ``with`` block; FolderBusyError at once when a live process holds it."""
    lock = FolderLock(folder)
    try:
        yield lock
    finally:
        lock.release()


def lock_on_main_process(
    state,
    folder: str | os.PathLike,
    held: contextlib.ExitStack,
    *,
    error: type[Exception],
    describe: Callable[[BaseException], str | None],
    check: Callable[[], None] | None = None,
    if_exists: bool = False,
) -> bool:
    """Collective, for several processes writing one folder: the main process of ``state`` (an accelerate
    ``Accelerator`` or ``PartialState``) takes ``folder``'s lock into ``held`` (released when ``held`` closes),
    then runs ``check`` (its own verdict on the folder's content); every rank waits for that verdict.

    True when taken; False when ``if_exists`` and there is no folder yet (so a run that cannot start leaves
    nothing behind). When the lock is busy, the folder cannot be made, or ``check`` raises ``error``, every rank
    raises ``error(describe(exc))`` (``describe`` returns the one line; None re-raises ``exc`` on the main process).
    """
    from accelerate.utils import broadcast_object_list

    verdict: list = [None]  # None: taken; "": skipped; else the error line
    if state.is_main_process:
        if if_exists and not Path(folder).is_dir():
            verdict = [""]
        else:
            try:
                held.enter_context(FolderLock(folder))
                if check is not None:
                    check()
            except (FolderBusyError, OSError, error) as exc:
                line = describe(exc)
                if line is None:
                    raise
                verdict = [line]
    line = broadcast_object_list(verdict)[0]
    if line:
        raise error(line)
    return line is None

"""Small file helpers shared by every stage: atomic writes (text, bytes, PNG, whole folders) and JSONL reading.

Every output file of the project is written through :func:`atomic_write` (a temporary file in the same folder,
fsynced, then ``os.replace``, then the folder fsynced), so a crash never leaves a half-written file behind and a
power cut does not undo a rename that was reported done. Whole folders (a ``datasets`` folder, an exported
pipeline, sprite sheets) are built in a temporary folder beside the target and swapped in by
:func:`atomic_replace_dir`. :func:`iter_jsonl` reads a JSONL file line by line and turns a bad line into the
caller's own one-line error.

Crash leftovers: every temporary name carries its owner's pid (``.<name>.tmp-<pid>-<random>`` for files,
``.<name>.tmp-<pid>`` / ``.<name>.old-<pid>`` for folders); :func:`clean_stale_temps`, called by each stage as it
starts, removes those whose owner process is gone (a live pid, or one reused by another process, is left alone).
:func:`disk_error_line` turns a full disk (``ENOSPC``, ``EDQUOT``, ``EFBIG``, and torch's ``enforce fail at
inline_container.cc ... file write failed``) into one line naming the path.

Example::

    from pathlib import Path
    from common.fileio import atomic_replace_dir, atomic_write, iter_jsonl
    atomic_write(Path("/tmp/x.jsonl"), '{"a": 1}\\n\\n{"a": 2}\\n')
    for lineno, rec in iter_jsonl(Path("/tmp/x.jsonl"), lambda n, msg: ValueError(f"x.jsonl:{n}: {msg}")):
        print(lineno, rec)   # 1 {'a': 1} / 3 {'a': 2}
    with atomic_replace_dir(Path("/tmp/out")) as tmp:
        (tmp / "a.txt").write_text("whole or not at all")
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = [
    "atomic_replace_dir",
    "atomic_write",
    "atomic_write_json",
    "atomic_write_png",
    "clean_stale_temps",
    "disk_error_line",
    "os_error_line",
    "fsync_dir",
    "iter_jsonl",
    "pid_alive",
]

# ``.<name>.tmp-<pid>[-<random>]`` and ``.<name>.old-<pid>``: what atomic_write and atomic_replace_dir leave on a crash
_STALE_RE = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)(?:-[A-Za-z0-9_]+)?$")
# atomic_write's temporaries before they carried the pid (``.<name>.<8 random>.tmp``): removed once an hour old
_LEGACY_TMP_RE = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists on this machine (ours or another user's)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temps(
    folder: str | os.PathLike, *, legacy_age_s: float = 3600.0, name: str | None = None
) -> list[Path]:
    """Remove the crash leftovers of :func:`atomic_write` / :func:`atomic_replace_dir` directly in ``folder``
    whose owner pid is gone; returns what was removed. Never touches a live process's temporaries, nor any name
    that is not one of ours. With ``name``, only the leftovers of that one target (``.<name>.tmp-<pid>...``)."""
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    now = time.time()
    for p in entries:
        m = _STALE_RE.match(p.name)
        if name is not None and (m is None or m.group("name") != name):
            continue
        try:
            if m:
                stale = not pid_alive(int(m.group("pid")))
            else:
                stale = bool(_LEGACY_TMP_RE.match(p.name)) and now - p.lstat().st_mtime > legacy_age_s
            if not stale:
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        except OSError:
            continue  # gone meanwhile, or not ours to remove: leave it
        removed.append(p)
    return removed


def os_error_line(exc: OSError, where: str | os.PathLike, option: str = "") -> str:
    """One line for any other OSError while writing ``where`` (read-only, not a folder, permission denied)."""
    path = exc.filename or where
    why = exc.strerror or type(exc).__name__
    if exc.errno == errno.EISDIR:
        hint = f"{option} names a folder; give a file path" if option else "it is a folder; give a file path"
    else:
        hint = f"pass {option} a writable folder" if option else "check that the folder is writable"
    return f"{path}: {why}; {hint}"


def disk_error_line(exc: BaseException, where: str | os.PathLike) -> str | None:
    """One line for an error that means the disk (or the file size limit) is full, naming the file; else None."""
    text = str(exc)
    if isinstance(exc, OSError) and (exc.errno in _DISK_FULL or "No space left" in text):
        path = exc.filename or where
        why = exc.strerror or "no space left on device"
        return f"{path}: disk full ({why}); free space there or write to another disk, then run again"
    torch_write = isinstance(exc, RuntimeError) and ("inline_container" in text or "file write failed" in text)
    if torch_write or "No space left on device" in text or "os error 28" in text:  # torch, safetensors, pyarrow
        return f"{where}: disk full (a checkpoint or weights file could not be written); free space, then run again"
    return None


def fsync_dir(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename inside it) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the rename itself is still atomic
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, data: str | bytes) -> None:
    """Write ``data`` (str as UTF-8) to ``path`` atomically, creating its folder; no temporary file is left.

    The file is fsynced before the rename and its folder after it, so once this returns the new content is on
    disk whole."""
    path = Path(path)
    if path.is_dir():  # os.replace would blame the temporary's name; name the folder the caller gave
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes it 0600; these are ordinary shared outputs
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    """``obj`` as indented JSON with sorted keys, written atomically."""
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_write_png(path: str | os.PathLike, img) -> None:
    """Encode ``img`` (a PIL image or a uint8 (H, W, 3) array) as PNG and write it atomically."""
    import io

    from PIL import Image

    im = img if isinstance(img, Image.Image) else Image.fromarray(img)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    atomic_write(path, buf.getvalue())


@contextlib.contextmanager
def atomic_replace_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target`` (``.<name>.tmp-<pid>``) to fill; when the block ends
    without an error, swap it in for ``target`` (the previous folder, if any, is set aside as ``.<name>.old-<pid>``
    and removed after the swap). If the block removed the temporary folder, ``target`` is removed instead. On an
    error the temporary folder goes and ``target`` is left as it was, so readers see the old folder or the new
    one, never a half-written one."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    clean_stale_temps(target.parent, name=target.name)  # a crashed run's, if its pid is gone
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if target.exists():
            os.replace(target, old)
        if tmp.exists():
            os.replace(tmp, target)
        fsync_dir(target.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # already renamed unless the block failed
        shutil.rmtree(old, ignore_errors=True)


def iter_jsonl(path: Path, bad_line: Callable[[int, str], Exception]) -> Iterator[tuple[int, object]]:
    """``(line number, decoded value)`` of each non-blank line; ``bad_line(lineno, message)`` is raised for a line
    that is not JSON or not UTF-8 (invalid bytes, or a character cut short at the end of the file)."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise bad_line(
                    lineno, f"not UTF-8: byte {exc.start + 1} of the line is {raw[exc.start]:#04x}"
                ) from None
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                raise bad_line(lineno, exc.msg) from None

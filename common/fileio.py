"""Small file helpers shared by every stage: atomic writes (text, bytes, PNG, whole folders) and JSONL reading.

Every output file of the project is written through :func:`atomic_write` (a temporary file in the same folder,
fsynced, then ``os.replace``, then the folder fsynced), so a crash never leaves a half-written file behind and a
power cut does not undo a rename that was reported done. Whole folders (a ``datasets`` folder, an exported
pipeline, sprite sheets) are built in a temporary folder beside the target and swapped in by
:func:`atomic_replace_dir`. :func:`iter_jsonl` reads a JSONL file line by line and turns a bad line into the
caller's own one-line error.

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
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["atomic_replace_dir", "atomic_write", "atomic_write_json", "atomic_write_png", "fsync_dir", "iter_jsonl"]


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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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

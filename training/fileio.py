"""Small file helpers shared by every stage: atomic writes (text, bytes, PNG) and JSONL reading.

Every output file of the project is written through :func:`atomic_write` (a temporary file in the same folder,
then ``os.replace``), so a crash never leaves a half-written file behind. :func:`iter_jsonl` reads a JSONL file
line by line and turns a bad line into the caller's own one-line error.

Example::

    from pathlib import Path
    from training.fileio import atomic_write, iter_jsonl
    atomic_write(Path("/tmp/x.jsonl"), '{"a": 1}\\n\\n{"a": 2}\\n')
    for lineno, rec in iter_jsonl(Path("/tmp/x.jsonl"), lambda n, msg: ValueError(f"x.jsonl:{n}: {msg}")):
        print(lineno, rec)   # 1 {'a': 1} / 3 {'a': 2}
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_png", "iter_jsonl"]


def atomic_write(path: str | os.PathLike, data: str | bytes) -> None:
    """Write ``data`` (str as UTF-8) to ``path`` atomically, creating its folder; no temporary file is left."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes it 0600; these are ordinary shared outputs
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_png(path: str | os.PathLike, img) -> None:
    """Encode ``img`` (a PIL image or a uint8 (H, W, 3) array) as PNG and write it atomically."""
    import io

    from PIL import Image

    im = img if isinstance(img, Image.Image) else Image.fromarray(img)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    atomic_write(path, buf.getvalue())


def iter_jsonl(path: Path, bad_line: Callable[[int, str], Exception]) -> Iterator[tuple[int, object]]:
    """``(line number, decoded value)`` of each non-blank line; ``bad_line(lineno, json_error_msg)`` is raised
    for a line that is not JSON."""
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                raise bad_line(lineno, exc.msg) from None

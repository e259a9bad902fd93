"""Paths fit to publish: no home folders or run directories of this machine in what goes to the Hub.

``portable_path(value, base)`` turns a local path into what a reader elsewhere can use: relative to ``base`` when
the path lies inside it, else its name only (``/home/me/data/curated/dataset`` -> ``dataset``). ``scrub_paths``
applies it to every path-like value of a nested dict/list (keys ending in ``_dir``/``_path``, the usual path keys,
and any absolute string), e.g. the curation report or a training config before it is uploaded.

Example::

    from common.paths import portable_path, scrub_paths
    portable_path("/home/me/out/previews/kept.png", "/home/me/out")      # 'previews/kept.png'
    scrub_paths({"data": {"dataset_dir": "/home/me/out/dataset"}, "ref": "/srv/d:test"})
    # {'data': {'dataset_dir': 'dataset'}, 'ref': 'd:test'}
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

__all__ = ["PATH_KEYS", "looks_absolute", "portable_path", "scrub_paths"]

# Keys whose string values are file system paths in our reports and configs (besides *_dir / *_path).
PATH_KEYS = frozenset({"feed", "images", "out", "path", "dataset", "ref", "folder", "source", "run_dir"})
_SPLIT_SUFFIX = re.compile(r"^(?P<path>.+):(?P<split>[A-Za-z_][\w.-]*)$")  # DIR:split (ptt-fid --ref)


def looks_absolute(value: str) -> bool:
    """An absolute POSIX or Windows path, or one starting at a home folder (``~``)."""
    return value.startswith(("/", "~")) or PureWindowsPath(value).is_absolute()


def portable_path(value: str | os.PathLike, base: str | os.PathLike | None = None) -> str:
    """``value`` relative to ``base`` when inside it; else its name only. A relative path without ``..`` is kept."""
    text = os.fspath(value)
    m = _SPLIT_SUFFIX.match(text)
    if m and not PureWindowsPath(text).drive:  # "DIR:split": keep the split, make the folder portable
        return f"{portable_path(m['path'], base)}:{m['split']}"
    if not looks_absolute(text):
        parts = PurePosixPath(text.replace("\\", "/")).parts
        return text if ".." not in parts else (parts[-1] if parts and parts[-1] != ".." else "")
    path = Path(text).expanduser()
    if base is not None:
        try:
            rel = path.resolve().relative_to(Path(base).expanduser().resolve())
            return rel.as_posix() if rel.parts else "."
        except ValueError:
            pass
    return PureWindowsPath(text).name if PureWindowsPath(text).drive else path.name


def scrub_paths(obj: Any, base: str | os.PathLike | None = None) -> Any:
    """A copy of ``obj`` whose path-like strings went through :func:`portable_path`."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            key = str(k)
            if isinstance(v, str) and (key in PATH_KEYS or key.endswith(("_dir", "_path")) or looks_absolute(v)):
                out[k] = portable_path(v, base)
            else:
                out[k] = scrub_paths(v, base)
        return out
    if isinstance(obj, list | tuple):
        return type(obj)(scrub_paths(v, base) for v in obj)
    if isinstance(obj, str) and looks_absolute(obj):
        return portable_path(obj, base)
    return obj

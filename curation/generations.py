"""The curated folder's set of outputs, swapped as one unit: readers see the whole old set or the whole new one.

A curation run writes ``faces.jsonl``, ``faces/``, ``previews/``, ``dataset/`` and ``curation_report.json``
(:data:`SET_ENTRIES`) into a fresh generation folder ``<out>/.generations/g<NNNNNN>/``, then publishes it by
renaming one symbolic link, ``<out>/.current -> .generations/g<NNNNNN>``: a single ``rename(2)``, so a kill
(``kill -9``, Ctrl-C, a power cut) before it leaves the previous set in place, and after it the new one, never a
mixture. The documented paths stay: ``<out>/dataset`` is a fixed link to ``.current/dataset`` (and likewise for
every entry of the set), so ``data.dataset_dir=<out>/dataset`` keeps working. A reader that opens several entries
resolves :func:`current_set` once and reads them all from that folder; the previous generation is kept until the
next publish, so a reader that resolved it just before a swap can finish. ``cache/`` (resumable, keyed by photo
content) and the files other commands write (``review.json``, ``review.html``, ``hub_push.json``) stay outside.

A folder written before generations existed (real ``dataset/`` ... entries), or copied by a tool that followed the
links, is adopted as generation 0 (each entry moved into it and replaced by its link, one at a time, so every
readable entry is still the old set).

Example::

    from pathlib import Path
    from curation.generations import current_set
    print(current_set(Path("demo_out/curated")))   # demo_out/curated/.generations/g000003
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from pathlib import Path

from common.fileio import fsync_dir

__all__ = ["CURRENT_LINK", "GENERATIONS_DIR", "SET_ENTRIES", "begin_generation", "current_set", "publish_generation"]

GENERATIONS_DIR = ".generations"
CURRENT_LINK = ".current"
SET_ENTRIES = ("faces.jsonl", "faces", "previews", "dataset", "curation_report.json")
_GEN_RE = re.compile(r"^g(\d{6,})$")


def _number(name: str) -> int | None:
    m = _GEN_RE.match(name)
    return int(m.group(1)) if m else None


def current_set(out: str | os.PathLike) -> Path:
    """The folder that holds ``out``'s current set: its published generation (resolved once, so several reads
    from it agree), or ``out`` itself for a folder written before generations (or never written)."""
    out = Path(out)
    link = out / CURRENT_LINK
    if link.is_symlink():
        return out / os.readlink(link)
    return out


def _replace_link(link: Path, target: str) -> None:
    """Point ``link`` at ``target`` with one rename (a link made beside it first)."""
    # a leftover of this name (a kill between the two calls) is removed by common.fileio.clean_stale_temps
    tmp = link.with_name(f".{link.name.lstrip('.')}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _adopt_legacy(out: Path) -> None:
    """Move a pre-generation set (real entries in ``out``) into ``.generations/g000000`` behind the links."""
    link = out / CURRENT_LINK
    if link.is_symlink():
        return
    if link.is_dir():  # a copy that followed the links (shutil.copytree, cp -L): the real entries beside are the set
        shutil.rmtree(link)
    elif link.exists():
        link.unlink()
    gen = out / GENERATIONS_DIR / "g000000"
    gen.mkdir(parents=True, exist_ok=True)
    _replace_link(out / CURRENT_LINK, f"{GENERATIONS_DIR}/{gen.name}")
    fsync_dir(out)


def _link_entries(out: Path) -> None:
    """Make each entry of the set a link to ``.current/<entry>``; a real one left from an older layout is moved
    into the current generation first (so it stays readable as part of the set it belonged to)."""
    gen = current_set(out)
    for name in SET_ENTRIES:
        entry, want = out / name, f"{CURRENT_LINK}/{name}"
        if entry.is_symlink() and os.readlink(entry) == want:
            continue
        if entry.exists() and not entry.is_symlink() and not (gen / name).exists():
            os.replace(entry, gen / name)  # adopted: from here it is read through its link
        elif entry.is_symlink() or entry.is_file():
            entry.unlink()
        elif entry.is_dir():
            shutil.rmtree(entry)
        _replace_link(entry, want)
    fsync_dir(out)


def begin_generation(out: Path) -> Path:
    """A new, empty generation folder for this run (the caller holds ``out``'s lock). Folders of runs that were
    killed before they published are removed first; an older layout is adopted as generation 0."""
    _adopt_legacy(out)
    _link_entries(out)
    gens = out / GENERATIONS_DIR
    current = _number(current_set(out).name) or 0
    for p in gens.iterdir():
        n = _number(p.name)
        if n is not None and n > current:  # built by a run that was killed before its publish
            shutil.rmtree(p, ignore_errors=True)
    numbers = [n for p in gens.iterdir() if (n := _number(p.name)) is not None]
    gen = gens / f"g{max(numbers, default=0) + 1:06d}"
    gen.mkdir()
    return gen


def publish_generation(out: Path, gen: Path) -> None:
    """Make ``gen`` the current set (one rename of ``.current``), then remove every generation but it and the one
    it replaced (a reader that resolved the old one a moment ago can still finish)."""
    previous = current_set(out).name
    _replace_link(out / CURRENT_LINK, f"{GENERATIONS_DIR}/{gen.name}")
    fsync_dir(out)
    for p in (out / GENERATIONS_DIR).iterdir():
        if _number(p.name) is not None and p.name not in (gen.name, previous):
            shutil.rmtree(p, ignore_errors=True)

"""The review page: a static HTML grid of curated faces for the manual pass, and the review file it exports.

Input is a curation output folder ``OUT`` written by ``ptt-curate``:

- ``OUT/faces.jsonl``: one JSON object per detected face (kept or rejected), a ``curation.record.FaceRecord``
  without its image; the page shows its ``PAGE_COLUMNS`` (``face_id``, ``status``, ``reason``, ``split``, the
  metrics, ``pose``, ``gender``, ``article_id``, ``image_url``);
- ``OUT/faces/<face_id>.png``: the 64x64 aligned crop of every face;
- optionally ``OUT/review.json`` and ``OUT/curation_report.json``.

Output is ``OUT/review.html`` (or ``page_path``): one static page, no server and no network, CSS and JS inline.
The thumbnails are packed into sprite sheets of ``sheet_side x sheet_side`` faces (PNG). Small sets embed the
sheets in the page as ``data:`` URIs (one file to share); large sets write them beside the page in
``<page stem>_sprites/`` (file names carry a content hash, so a regenerated page never shows stale thumbnails from the
browser cache). The grid is virtualised: only the rows in view exist in the DOM, so tens of thousands of faces
scroll without freezing the browser.

On the page: group by pose / reject reason / gender / split / blur or face-score deciles, sort by any metric, arrow
keys move the focus, ``x`` or space toggles reject on the focused face, a click toggles the clicked face. Decisions
are kept in the browser's localStorage and exported with the "Export review.json" button as the review file::

    {"version": 1, "rejected": ["<face_id>", ...]}

Save it as ``OUT/review.json``; the next ``ptt-curate`` run drops those faces (reason ``review``) without re-running
detection. "Import review.json" loads a review file into the page (replacing the page's decisions). An existing
``OUT/review.json`` (and faces already rejected with reason ``review``) are embedded, so the page opens with the
earlier decisions.

Example::

    python -m curation.review demo_out/curated            # prints demo_out/curated/review.html
    ptt-curate review demo_out/curated --open              # same, and opens it in the default browser
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import io
import json
import logging
import math
import os
import re
import shutil
import sys
import webbrowser
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from PIL import Image

from common.fileio import atomic_replace_dir, atomic_write, iter_jsonl
from common.lock import FolderBusyError, FolderLock
from curation.generations import current_set
from curation.record import FLOAT_COLUMNS, PAGE_COLUMNS

log = logging.getLogger(__name__)

REVIEW_VERSION = 1
REVIEW_FILENAME = "review.json"
PAGE_FILENAME = "review.html"
THUMB_PX = 64  # faces are 64x64 crops; thumbnails keep every pixel, the page zooms with CSS
SHEET_SIDE = 32  # 32x32 faces per sprite sheet: 2112x2112 px with padding, 1024 faces per image decode
SPRITE_PAD_PX = 1  # edge-replicated frame: the browser's filtering at 1.5x zoom samples it, not the next face
EMBED_MAX_BYTES = (
    8 * 1024 * 1024
)  # "auto": embed while sheets total <= 8 MiB (~1000 faces; 20 MiB pages load in ~2.4 s)
SPRITES_MODES = ("auto", "embed", "files")

# Columns sent to the page: the record's PAGE_COLUMNS (one JSON array per face keeps the page small: ~120 bytes a
# face); the numeric ones are rounded.
_NUMERIC = frozenset(FLOAT_COLUMNS) & frozenset(PAGE_COLUMNS)


class ReviewError(ValueError):
    """Bad review input (missing or malformed file); the message names the file and the fix."""


@dataclass
class Face:
    face_id: str
    record: dict[str, Any]
    png_path: Path


# ---------------------------------------------------------------- review file


def read_review_file(path: str | os.PathLike) -> list[str]:
    """Read a review file and return its rejected face ids (sorted, unique)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReviewError(f"{path}: review file not found") from None
    except IsADirectoryError:
        raise ReviewError(f"{path}: a folder, not a review file; give the review.json the page exported") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ReviewError(f"{path}: not valid JSON ({err}); export it again from the review page") from None
    if (
        not isinstance(data, dict)
        or data.get("version") != REVIEW_VERSION
        or not isinstance(data.get("rejected"), list)
    ):
        raise ReviewError(
            f'{path}: expected {{"version": {REVIEW_VERSION}, "rejected": [face ids]}}; '
            "export it again from the review page"
        )
    bad = [x for x in data["rejected"] if not isinstance(x, str)]
    if bad:
        raise ReviewError(f"{path}: 'rejected' must hold face id strings, found {bad[0]!r}")
    return sorted(set(data["rejected"]))


def write_review_file(path: str | os.PathLike, rejected: Sequence[str]) -> Path:
    """Write a review file atomically (temp + rename) in the format the page exports."""
    path = Path(path)
    text = json.dumps({"version": REVIEW_VERSION, "rejected": sorted(set(rejected))}, indent=1) + "\n"
    atomic_write(path, text.encode("utf-8"))
    return path


# ---------------------------------------------------------------- inputs


def load_faces(out_dir: str | os.PathLike, set_dir: Path | None = None) -> list[Face]:
    """Read ``OUT/faces.jsonl``; each face's crop is expected at ``OUT/faces/<face_id>.png``. Both come from one
    generation of the set (``set_dir``, default ``curation.generations.current_set``), even while a curation run
    publishes another."""
    out_dir = Path(out_dir)
    jsonl = out_dir / "faces.jsonl"
    if not out_dir.is_dir():
        raise ReviewError(f"{out_dir}: not a folder; give the curation output folder (the `out=` of ptt-curate)")
    if not jsonl.is_file():
        raise ReviewError(
            f"{jsonl}: not found; run `ptt-curate --config configs/curation.yaml out={out_dir} ...` first "
            "(review needs the curation output folder, which holds faces.jsonl and faces/)"
        )
    faces: list[Face] = []
    seen: set[str] = set()
    shown, set_dir = jsonl, set_dir or current_set(out_dir)
    jsonl = set_dir / "faces.jsonl"

    def bad(n: int, msg: str) -> ReviewError:
        return ReviewError(f"{shown}:{n}: not valid JSON ({msg}); rerun ptt-curate to rewrite it")

    for lineno, rec in iter_jsonl(jsonl, bad):
        if not isinstance(rec, dict) or not isinstance(rec.get("face_id"), str) or not rec["face_id"]:
            raise ReviewError(f"{shown}:{lineno}: each line needs a string 'face_id'; rerun ptt-curate to rewrite it")
        fid = rec["face_id"]
        if fid in seen:
            raise ReviewError(f"{shown}:{lineno}: duplicate face_id {fid!r}; rerun ptt-curate to rewrite it")
        seen.add(fid)
        faces.append(Face(fid, rec, set_dir / "faces" / f"{fid}.png"))
    return faces


def iter_sprite_sheets(
    pngs: Sequence[Path],
    *,
    side: int = SHEET_SIDE,
    thumb_px: int = THUMB_PX,
    pad_px: int = SPRITE_PAD_PX,
    missing: list[str] | None = None,
) -> Iterator[bytes]:
    """Pack face PNGs into ``side x side`` sheets and yield each sheet's PNG bytes (one sheet in memory at a time).

    Thumbnail ``j`` of a sheet occupies the ``stride = thumb_px + 2 * pad_px`` square at column ``j % side``, row
    ``j // side``; its pixels start ``pad_px`` inside that square. The last sheet is only as tall as it needs (and
    as wide, when it has a single row). Unreadable or missing files give grey cells; their ids (file stems) are
    appended to ``missing``.
    """
    per_sheet = side * side
    stride = thumb_px + 2 * pad_px
    for start in range(0, len(pngs), per_sheet):
        chunk = pngs[start : start + per_sheet]
        rows = math.ceil(len(chunk) / side)
        cols = side if rows > 1 else len(chunk)
        sheet = np.full((rows * stride, cols * stride, 3), 128, np.uint8)
        for k, path in enumerate(chunk):
            try:
                with Image.open(path) as im:
                    im = im.convert("RGB")
                    if im.size != (thumb_px, thumb_px):
                        im = im.resize((thumb_px, thumb_px), Image.Resampling.BOX)
                    thumb = np.pad(np.asarray(im), ((pad_px, pad_px), (pad_px, pad_px), (0, 0)), mode="edge")
            except (OSError, ValueError) as err:
                log.warning("review: cannot read %s (%s); shown as a grey cell", path, err)
                if missing is not None:
                    missing.append(path.stem)
                continue
            y, x = (k // side) * stride, (k % side) * stride
            sheet[y : y + stride, x : x + stride] = thumb
        buf = io.BytesIO()
        Image.fromarray(sheet).save(buf, format="PNG", compress_level=1)  # 4x faster than level 6, ~7% larger
        yield buf.getvalue()


# ---------------------------------------------------------------- page


def _clean_value(key: str, value: Any) -> Any:
    if key in _NUMERIC:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return None
        return round(float(value), 3)
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _page_id(face_ids: Sequence[str], initial: Sequence[str]) -> str:
    h = hashlib.sha1()
    for fid in face_ids:
        h.update(fid.encode() + b"\n")
    h.update(b"--\n")
    for fid in initial:
        h.update(fid.encode() + b"\n")
    return h.hexdigest()[:16]


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _json_for_script(obj: Any) -> str:
    """JSON safe inside <script type="application/json">: no '</script>' or '<!--' can appear."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _asset(name: str) -> str:
    return resources.files("curation.review_assets").joinpath(name).read_text(encoding="utf-8")


def render_page(page_data: dict[str, Any], *, title: str) -> str:
    """Fill the page template (``review_assets/``) with the data JSON. Pure: no disk writes."""
    page = _asset("page.html")
    parts = {
        "{{TITLE}}": html.escape(title),
        "/*{{CSS}}*/": _asset("review.css"),
        "/*{{JS}}*/": _asset("review.js"),
        "{{DATA}}": _json_for_script(page_data),
    }
    missing = [key for key in parts if key not in page]
    assert not missing, f"page template lacks {missing}"
    # One pass, so a value that happens to contain a placeholder (a folder name, a URL) is never substituted again.
    pattern = re.compile("|".join(re.escape(key) for key in parts))
    return pattern.sub(lambda m: parts[m.group(0)], page)


def write_review_page(
    out_dir: str | os.PathLike,
    page_path: str | os.PathLike | None = None,
    *,
    sprites: str = "auto",
    sheet_side: int = SHEET_SIDE,
    review_path: str | os.PathLike | None = None,
) -> Path:
    """Write the review page for curation output ``out_dir`` and return its path (default ``OUT/review.html``).

    ``sprites``: ``embed`` (data: URIs, one self-contained file), ``files`` (PNG sheets in ``<stem>_sprites/`` beside
    the page) or ``auto`` (embed while the sheets total at most 8 MiB). ``review_path`` (default ``OUT/review.json``)
    is read, when present, for the decisions the page opens with.
    """
    if sprites not in SPRITES_MODES:
        raise ReviewError(f"sprites={sprites!r}: choose one of {', '.join(SPRITES_MODES)}")
    if sheet_side < 1:
        raise ReviewError(f"sheet_side={sheet_side}: must be >= 1")
    out_dir = Path(out_dir)
    if not (out_dir / "faces.jsonl").is_file() and (out_dir / "dataset_dict.json").is_file():
        if (out_dir.parent / "faces.jsonl").is_file():  # given OUT/dataset: the faces live one level up
            log.info("review: %s is the dataset folder; using its curation output folder %s", out_dir, out_dir.parent)
            out_dir = out_dir.parent  # (before resolving: OUT/dataset is a link into OUT/.generations/)
    out_dir = out_dir.resolve()
    page_path = Path(page_path) if page_path is not None else out_dir / PAGE_FILENAME
    page_path = page_path.resolve()
    review_path = Path(review_path) if review_path is not None else out_dir / REVIEW_FILENAME

    set_dir = current_set(out_dir)  # faces, crops and report all from one generation of the set
    faces = load_faces(out_dir, set_dir)
    known = {f.face_id for f in faces}
    from_file = read_review_file(review_path) if review_path.exists() else []
    from_records = [f.face_id for f in faces if f.record.get("reason") == "review"]
    initial = sorted(set(from_file) | set(from_records))
    unknown = [fid for fid in from_file if fid not in known]
    if unknown:
        log.warning("review: %d ids in %s are not in faces.jsonl (kept in the export)", len(unknown), review_path)

    report_path = set_dir / "curation_report.json"
    report: Any = None
    if report_path.is_file():
        try:
            report = json.loads(report_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            log.warning("review: %s is not valid JSON (%s); page shown without it", report_path, err)

    # Sheets go one at a time into a temp folder beside the page (memory: one sheet); then either embedded in the
    # page (auto: while small) or swapped in as <stem>_sprites/. A page inside OUT is written under OUT's lock,
    # like a curation run's files: two writers would mix one page's sprites with the other's.
    sprite_dir = page_path.parent / f"{page_path.stem}_sprites"
    owned = FolderLock(out_dir) if page_path.is_relative_to(out_dir) else None
    try:
        with atomic_replace_dir(sprite_dir) as tmp_dir:
            missing: list[str] = []
            names: list[str] = []
            total = 0
            for i, png in enumerate(iter_sprite_sheets([f.png_path for f in faces], side=sheet_side, missing=missing)):
                names.append(f"sheet-{i:04d}-{hashlib.sha1(png).hexdigest()[:10]}.png")  # new content, new URL
                (tmp_dir / names[-1]).write_bytes(png)
                total += len(png)
            embed = sprites == "embed" or (sprites == "auto" and total <= EMBED_MAX_BYTES)
            if embed:
                srcs = [_data_uri((tmp_dir / name).read_bytes()) for name in names]
            else:
                # relative: page and folder move together
                srcs = [f"{quote(sprite_dir.name)}/{name}" for name in names]
            page_data = {
                "version": 1,
                "out_dir": str(out_dir),
                "review_path": str(review_path.resolve()),
                "page_id": _page_id([f.face_id for f in faces], initial),
                "columns": list(PAGE_COLUMNS),
                "rows": [
                    [_clean_value(c, f.face_id if c == "face_id" else f.record.get(c)) for c in PAGE_COLUMNS]
                    for f in faces
                ],
                "sheets": {"srcs": srcs, "side": sheet_side, "thumb_px": THUMB_PX, "pad_px": SPRITE_PAD_PX},
                "missing": missing,
                "initial_rejected": initial,
                "report": report,
            }
            text = render_page(page_data, title=f"Review: {out_dir.name} ({len(faces)} faces)")
            if embed:
                shutil.rmtree(tmp_dir)  # no sprite folder: an earlier page's sheets go too (stale either way)
        atomic_write(page_path, text.encode("utf-8"))
    finally:
        if owned is not None:
            owned.release()
    log.info(
        "review: %d faces, %d sheets (%s, %.1f MiB) -> %s",
        len(faces),
        len(names),
        "embedded" if embed else sprite_dir,
        total / 2**20,
        page_path,
    )
    return page_path


# ---------------------------------------------------------------- entry point


def _parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Write the static review page for a curation output folder and print its path.",
    )
    p.add_argument("out_dir", help="curation output folder (holds faces.jsonl and faces/)")
    p.add_argument("--out", dest="page", default=None, help="page path (default OUT_DIR/review.html)")
    p.add_argument("--open", action="store_true", help="open the page in the default web browser")
    p.add_argument(
        "--sprites",
        choices=SPRITES_MODES,
        default="auto",
        help="thumbnails inside the page (embed), as PNG files beside it (files), or embed while small (auto)",
    )
    return p


def main_review(argv: Sequence[str] | None = None, *, prog: str = "ptt-curate review") -> int:
    """``ptt-curate review OUT_DIR [--open] [--out PATH] [--sprites MODE]``: write the page, print its path."""
    args = _parser(prog).parse_args(list(argv) if argv is not None else None)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        page = write_review_page(args.out_dir, args.page, sprites=args.sprites)
    except (ReviewError, FolderBusyError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    print(page)
    if args.open and not webbrowser.open(page.as_uri()):
        print(f"could not open a browser; open {page.as_uri()} yourself", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main_review(prog="python -m curation.review"))

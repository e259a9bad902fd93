"""The curation run: crawl feed + image store -> aligned 64x64 face ``datasets`` folder (contracts section 3).

:func:`run_curation` calls its steps in turn: ``curation.inputs.read_inputs`` (the feed, through
``scrapy_ptt.items.read_posts``, and the image store), ``curation.photos.hash_photos`` (same bytes =
``duplicate_photo``, kept once; cached detections picked up), ``curation.faces.detect_faces`` (decode, detect or
reuse ``cache/<sha1>.json``, align and measure in a pool of ``workers`` processes, then each face judged alone
against the thresholds), ``curation.faces.judge_dataset`` (near-duplicates, review decisions, split), then
``curation.faces.write_faces``, ``curation.previews``, ``curation.store.write_dataset`` and
``curation.report.build_report``. A face is one ``curation.record.FaceRecord`` from detection to the dataset row.

Written under ``<out>``: ``dataset/`` (a ``DatasetDict``, written to a temp folder, then renamed; splits ``train``
/ ``test``, a face's split depending only on ``split.seed`` and its ``face_id``; columns
``curation.record.DATASET_COLUMNS``), ``curation_report.json``, ``previews/`` (contact sheets of kept faces and
per reject reason, histograms with thresholds), ``cache/`` (detections by photo content hash, in the stored
photo's pixels: a rerun only detects new photos; changing a filter threshold re-runs no detection; a crashed run
resumes), ``faces/<face_id>.png`` and ``faces.jsonl`` (every detected face with status, reason, split and metrics,
for the review page). Review decisions: ``review_path`` (default ``<out>/review.json``) holds
``{"version": 1, "rejected": [face_id, ...]}``; those faces are dropped as ``review``.

Example::

    from curation.config import CurationConfig
    from curation.run import run_curation
    cfg = CurationConfig(feed="demo_out/feed.jsonl", images="demo_out/images", out="demo_out/curated")
    report = run_curation(cfg)
    print(report["faces"]["kept"], report["rejected"])
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from common.fileio import atomic_write, clean_stale_temps
from curation.config import CurationConfig
from curation.faces import detect_faces, judge_dataset, write_faces
from curation.inputs import CurationError, load_review, read_inputs
from curation.photos import detector_signature, hash_photos
from curation.report import build_report
from curation.store import write_dataset

log = logging.getLogger(__name__)

__all__ = ["CurationError", "run_curation"]


def _prepare_out(out: Path) -> Path:
    """Make ``out`` and its ``cache/``, after checking it can be written; clear a crashed run's temporaries."""
    if out.exists() and not out.is_dir():
        raise CurationError(f"out={out} is a file, not a folder; pass out= a folder (it will hold dataset/ ...)")
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK):
        raise CurationError(f"out={out} is not writable; pass out= a folder you can write to")
    cache_dir = out / "cache"
    cache_dir.mkdir(exist_ok=True)
    for folder in (out, cache_dir, out / "faces", out / "previews"):  # a crashed run's temporaries, if it is gone
        if gone := clean_stale_temps(folder):
            log.info("removed %d leftovers of an interrupted run in %s", len(gone), folder)
    return cache_dir


def run_curation(cfg: CurationConfig) -> dict:
    """Run the whole stage; returns the report (also written to ``<out>/curation_report.json``)."""
    from curation.previews import write_previews

    t0 = time.perf_counter()
    feed, images, out, refs, posts = read_inputs(cfg)
    cache_dir = _prepare_out(out)
    review_path = Path(cfg.review_path) if cfg.review_path else out / "review.json"
    review = load_review(review_path)

    photos = hash_photos(refs, posts, images, cache_dir, detector_signature(cfg))
    workers = cfg.workers or (os.cpu_count() or 1)
    log.info(
        "%d photos (%d unique, %d cached) from %d posts; %d workers",
        len(refs), len(photos.tasks), photos.cache_hits, posts, workers,
    )  # fmt: skip
    detected = detect_faces(photos, cfg, workers, cache_dir)
    kept, applied_review = judge_dataset(detected.rows, review, cfg)

    # write: faces/ + faces.jsonl, previews, dataset (atomic), report (atomic)
    if cfg.write_faces:
        write_faces(out, detected.rows)
    previews = write_previews(out / "previews", detected.rows, detected.thumbs, cfg)
    if kept:
        write_dataset(out / "dataset", kept)
    report = build_report(
        cfg, feed=feed, images=images, out=out, photos=photos, detected=detected, kept=kept,
        review_path=review_path, review=review, applied_review=applied_review, previews=previews,
        seconds=time.perf_counter() - t0,
    )  # fmt: skip
    atomic_write(out / "curation_report.json", json.dumps(report, indent=2, ensure_ascii=False))
    if not kept:
        raise CurationError(
            f"{out / 'curation_report.json'}: no face kept out of {len(detected.rows)} detected in "
            f"{len(photos.tasks)} photos; look at previews/ and relax the filters "
            "(e.g. filters.min_face_area_ratio=0.01)"
        )
    return report

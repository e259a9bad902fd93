"""The curation run: crawl feed + image store -> aligned 64x64 face ``datasets`` folder (contracts section 3).

:func:`run_curation` calls its steps in turn: ``curation.inputs.read_inputs`` (the feed, through
``scrapy_ptt.items.read_posts``, and the image store), ``curation.photos.hash_photos`` (same bytes =
``duplicate_photo``, kept once; cached detections picked up), ``curation.faces.detect_faces`` (decode, detect or
reuse ``cache/<sha1>.json``, align and measure in a pool of ``workers`` processes, then each face judged alone
against the thresholds), ``curation.faces.judge_dataset`` (near-duplicates, review decisions, split), then
``curation.faces.write_faces``, ``curation.previews``, ``curation.store.write_dataset`` and
``curation.report.build_report``, all into a new generation folder that ``curation.generations`` publishes with one
rename (a kill leaves the whole old set or the whole new one). A face is one ``curation.record.FaceRecord`` from
detection to the dataset row. The run holds ``<out>``'s lock (``common.lock``) from start to end.

Written under ``<out>``: ``dataset/`` (a ``DatasetDict``; splits ``train`` / ``test``, an empty one left out, a
face's split depending only on ``split.seed`` and its ``face_id``; columns ``curation.record.DATASET_COLUMNS``),
``curation_report.json``, ``previews/`` (contact sheets of kept faces and per reject reason, histograms with
thresholds), ``cache/`` (detections by photo content hash, in the stored photo's pixels: a rerun only detects new
photos; changing a filter threshold re-runs no detection; a crashed run resumes), ``faces/<face_id>.png`` and
``faces.jsonl`` (every detected face with status, reason, split and metrics, for the review page). Review
decisions: ``review_path`` (default ``<out>/review.json``) holds ``{"version": 1, "rejected": [face_id, ...]}``;
those faces are dropped as ``review``.

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
import signal
import time
from pathlib import Path

from common.fileio import atomic_write, clean_stale_temps
from common.lock import FolderBusyError, folder_lock
from curation.config import CurationConfig
from curation.faces import detect_faces, judge_dataset, write_faces
from curation.generations import begin_generation, current_set, publish_generation
from curation.inputs import CurationError, load_review, read_inputs
from curation.photos import detector_signature, hash_photos
from curation.report import build_report
from curation.store import write_dataset

log = logging.getLogger(__name__)

__all__ = ["CurationError", "FolderBusyError", "run_curation"]


def _prepare_out(out: Path) -> Path:
    """Make ``out`` and its ``cache/``, after checking it can be written; clear a crashed run's temporaries (the
    caller holds ``out``'s lock, so none of them belongs to a live run)."""
    cache_dir = out / "cache"
    cache_dir.mkdir(exist_ok=True)
    current = current_set(out)  # a folder written before generations keeps faces/ and previews/ in place
    for folder in (out, cache_dir, current / "faces", current / "previews"):  # a crashed run's, if it is gone
        if gone := clean_stale_temps(folder):
            log.info("removed %d leftovers of an interrupted run in %s", len(gone), folder)
    return cache_dir


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise CurationError(f"out={out} is a file, not a folder; pass out= a folder (it will hold dataset/ ...)")
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK):
        raise CurationError(f"out={out} is not writable; pass out= a folder you can write to")


def _kill_point(step: str) -> None:
    """Tests kill the run here for real (``kill -9`` of itself) to check that every step leaves a whole set."""
    if os.environ.get("PTT_CURATE_TEST_KILL_AT") == step:
        os.kill(os.getpid(), signal.SIGKILL)


def run_curation(cfg: CurationConfig) -> dict:
    """Run the whole stage; returns the report (also written to ``<out>/curation_report.json``). The run owns
    ``out`` (``common.lock.FolderLock``: a second run on it is refused, :class:`FolderBusyError`)."""
    feed, images, out, refs, posts = read_inputs(cfg)
    _check_out(out)
    with folder_lock(out):
        return _run_locked(cfg, feed, images, out, refs, posts)


def _run_locked(cfg: CurationConfig, feed: Path, images: Path, out: Path, refs: list, posts: int) -> dict:
    from curation.previews import write_previews

    t0 = time.perf_counter()
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
    kept, applied_review = judge_dataset(detected.rows, review, cfg, review_path=review_path)
    splits = {s: sum(r["split"] == s for r in kept) for s in ("train", "test")}

    # write the whole set into a new generation folder, then publish it with one rename (curation.generations)
    gen = begin_generation(out)
    previous = current_set(out)
    if cfg.write_faces:
        write_faces(gen, detected.rows, previous=previous)
    _kill_point("faces")
    previews = write_previews(gen / "previews", detected.rows, detected.thumbs, cfg, shown_as=out / "previews")
    _kill_point("previews")
    with_dataset = bool(kept) and splits["train"] > 0
    if with_dataset:
        write_dataset(gen / "dataset", kept)
    _kill_point("dataset")
    report = build_report(
        cfg, feed=feed, images=images, out=out, photos=photos, detected=detected, kept=kept,
        review_path=review_path, review=review, applied_review=applied_review, previews=previews,
        seconds=time.perf_counter() - t0, with_dataset=with_dataset,
    )  # fmt: skip
    report["generation"] = gen.name
    atomic_write(gen / "curation_report.json", json.dumps(report, indent=2, ensure_ascii=False))
    _kill_point("report")
    publish_generation(out, gen)
    _kill_point("published")
    if not kept:
        raise CurationError(
            f"{out / 'curation_report.json'}: no face kept out of {len(detected.rows)} detected in "
            f"{len(photos.tasks)} photos; look at previews/ and relax the filters "
            "(e.g. filters.min_face_area_ratio=0.01)"
        )
    if not with_dataset:  # datasets cannot load a DatasetDict with an empty split; a set with no train is no use
        raise CurationError(
            f"{out / 'curation_report.json'}: {len(kept)} face(s) kept, all in the test split, so no dataset was "
            f"written (training needs train faces); lower split.test_fraction (now {cfg.split.test_fraction}), "
            "relax the filters or curate more photos"
        )
    if not splits["test"]:
        log.warning(
            "no face in the test split (%d kept, split.test_fraction=%s): %s/dataset has a train split only; "
            "ptt-fid --ref needs a split of its own (raise split.test_fraction)",
            len(kept), cfg.split.test_fraction, out,
        )  # fmt: skip
    return report

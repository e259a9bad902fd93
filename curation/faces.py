"""The faces of a curation run: each judged alone (step 2), then the set judged whole (steps 3-4), then written.

:func:`detect_faces` runs the detection workers over step 1's photos and makes one ``curation.record.FaceRecord``
per detected face (feed fields + measured fields + ``pose`` + the first threshold it fails, ``reason``);
:func:`judge_dataset` drops near-duplicates (perceptual hash of the face or of its mirror image, first published
kept) and the faces rejected on the review page, and splits the rest (:func:`assign_splits`); :func:`write_faces`
writes ``faces/<face_id>.png`` and ``faces.jsonl`` for the review page.

Example::

    from curation.config import SplitConfig
    from curation.faces import assign_splits
    print(assign_splits(["0123456789abcdef-0", "fedcba9876543210-0"], SplitConfig()))
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from common.fileio import atomic_write
from curation import filters as F
from curation.config import CurationConfig, SplitConfig
from curation.photos import Photos
from curation.record import JSONL_FIELDS, MEASURED_FIELDS, FaceRecord
from curation.workers import iter_results

log = logging.getLogger(__name__)

__all__ = ["Detected", "detect_faces", "judge_dataset", "assign_splits", "write_faces"]


@dataclass
class Detected:
    """Step 2's output: one record per detected face (judged alone), rejected photos' thumbnails, timing."""

    rows: list[FaceRecord]
    thumbs: dict[str, list[bytes]]
    detected_now: int
    seconds: float


def detect_faces(photos: Photos, cfg: CurationConfig, workers: int, cache_dir: Path) -> Detected:
    """Step 2: detect, align and measure every photo (in ``workers`` processes), writing each fresh result to the
    cache; judge each face alone against the thresholds (rejected photos are counted into ``photos``)."""
    rows: list[FaceRecord] = []
    thumbs: dict[str, list[bytes]] = {}
    detected_now = 0
    t0 = time.perf_counter()
    for res in iter_results(photos.tasks, cfg, workers):
        ref = photos.owners[res["sha1"]]
        if res.get("cache"):
            atomic_write(cache_dir / f"{res['sha1']}.json", json.dumps(res["cache"]))
            detected_now += 1
        if res["status"] != "ok":
            photos.rejects[res["status"]] += 1
            photos.log.append({"path": ref.rel_path, "reason": res["status"], "detail": res.get("detail", "")})
            if res.get("thumb"):
                thumbs.setdefault(res["status"], []).append(res["thumb"])
            if res["status"] in ("unreadable", "too_large"):
                log.warning("%s: %s (%s)", ref.rel_path, res["status"], res.get("detail", ""))
            continue
        for f in res["faces"]:
            row: FaceRecord = {
                "face_id": f"{res['sha1'][:16]}-{f['index']}", "article_id": ref.article_id,
                "image_url": ref.image_url, "published_at": ref.published_at, "photo": ref.rel_path,
                **{k: f[k] for k in MEASURED_FIELDS},
            }  # fmt: skip
            row["pose"] = F.pose_label(row["yaw"], cfg.filters.frontal_yaw_deg)
            row["reason"] = F.judge_face(row, cfg.filters)
            rows.append(row)
    return Detected(rows=rows, thumbs=thumbs, detected_now=detected_now, seconds=time.perf_counter() - t0)


def assign_splits(face_ids: list[str], cfg: SplitConfig) -> list[str]:
    """``train`` / ``test`` per face: a face is in test when ``sha1(seed:face_id)`` falls under ``test_fraction``,
    so adding photos never moves a face between splits. When that leaves fewer than ``min_test_faces`` test faces
    and there are at least twice as many faces, the train faces with the smallest hashes move to test (FID on the
    test split needs at least 2 images)."""
    u = [int(hashlib.sha1(f"{cfg.seed}:{f}".encode()).hexdigest()[:12], 16) / float(1 << 48) for f in face_ids]
    splits = ["test" if x < cfg.test_fraction else "train" for x in u]
    if cfg.test_fraction > 0 and len(face_ids) >= 2 * cfg.min_test_faces:
        order = sorted((x, i) for i, x in enumerate(u) if splits[i] == "train")
        for _, i in order[: max(0, cfg.min_test_faces - splits.count("test"))]:
            splits[i] = "test"
    return splits


def judge_dataset(
    rows: list[FaceRecord], review: set[str], cfg: CurationConfig, *, review_path: Path | None = None
) -> tuple[list[FaceRecord], int]:
    """Steps 3-4 over the whole set: near-duplicates (first published kept), then the review decisions, then
    the split (stable per face, with a floor on the test split for small sets). Returns ``(kept rows, number of
    review rejections applied)``; every row gets ``reason``, ``status`` and ``split``. Review ids that match no
    detected face are counted in a warning (a review file of another ``out=`` folder applies nothing)."""
    t = cfg.filters
    rows.sort(key=lambda r: (r["published_at"], r["face_id"]))
    index = F.NearDuplicateIndex(t.phash_max_distance)
    for r in rows:
        if r["reason"] is None:
            dup = index.find(r["phash_mirror"]) if t.phash_check_mirror else None
            if dup is None:
                dup = index.add(r["phash"], r["face_id"])
            if dup is not None:
                r["reason"], r["duplicate_of"] = "near_duplicate", dup
    if unknown := review - {r["face_id"] for r in rows}:
        log.warning(
            "%s: %d of %d rejected face ids match no detected face (nothing applied for them); is it the review "
            "file of another out= folder?", review_path or "review file", len(unknown), len(review),
        )  # fmt: skip
    applied_review = 0
    for r in rows:
        if r["reason"] is None and r["face_id"] in review:
            r["reason"] = "review"
            applied_review += 1
    kept = [r for r in rows if r["reason"] is None]
    for r, split in zip(kept, assign_splits([r["face_id"] for r in kept], cfg.split), strict=True):
        r["split"] = split
    for r in rows:
        r["status"] = "kept" if r["reason"] is None else "rejected"
        r.setdefault("split", None)
    return kept, applied_review


def write_faces(out: Path, rows: list[FaceRecord], *, previous: Path | None = None) -> None:
    """``faces/<face_id>.png`` and ``faces.jsonl``, one line per detected face (the record's ``JSONL_FIELDS``),
    into ``out`` (a new generation folder). A face whose PNG is unchanged in ``previous`` (the set it replaces)
    is hard-linked from there instead of written again."""
    faces_dir = out / "faces"
    faces_dir.mkdir(exist_ok=True)
    lines = []
    for r in rows:
        p = faces_dir / f"{r['face_id']}.png"
        old = previous / "faces" / p.name if previous is not None else None
        try:
            same = old is not None and old.is_file() and old.read_bytes() == r["image"]
            if same:
                os.link(old, p)
        except OSError:  # a file system without hard links: write it
            same = False
        if not same:
            atomic_write(p, r["image"])
        lines.append(json.dumps({k: r[k] for k in JSONL_FIELDS if k in r}, ensure_ascii=False))
    atomic_write(out / "faces.jsonl", "".join(line + "\n" for line in lines))

"""The run's report, ``<out>/curation_report.json`` (contracts.md section 3): counts in, kept, rejected per reason,
and the thresholds, detector, alignment and split settings used.

Example::

    import json
    report = json.load(open("demo_out/curated/curation_report.json"))
    print(report["counts"], report["rejected"])
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from curation import filters as F
from curation.config import CurationConfig
from curation.faces import Detected
from curation.photos import Photos
from curation.record import FaceRecord

__all__ = ["REPORT_VERSION", "build_report"]

REPORT_VERSION = 1


def build_report(
    cfg: CurationConfig,
    *,
    feed: Path,
    images: Path,
    out: Path,
    photos: Photos,
    detected: Detected,
    kept: list[FaceRecord],
    review_path: Path,
    review: set[str],
    applied_review: int,
    previews: dict,
    seconds: float,
    with_dataset: bool = True,
) -> dict:
    """The ``curation_report.json`` object (contracts.md section 3)."""
    rows = detected.rows
    face_rejects = Counter(r["reason"] for r in rows if r["reason"] is not None)
    rejected = {k: photos.rejects.get(k, 0) + face_rejects.get(k, 0) for k in F.REASONS}
    counts = Counter(r["split"] for r in kept)
    return {
        "version": REPORT_VERSION,
        "feed": str(feed),
        "images": str(images),
        "out": str(out),
        "posts": photos.posts,
        "counts": {  # the one-line summary; the sections below have the detail
            "photos_in": len(photos.refs),
            "faces_detected": len(rows),
            "kept": len(kept),
            "train": counts.get("train", 0),
            "test": counts.get("test", 0),
            "rejected": {k: v for k, v in rejected.items() if v},
        },
        "photos": {
            "in": len(photos.refs),
            "unique": len(photos.tasks),
            "detected_now": detected.detected_now,
            "from_cache": photos.cache_hits,
        },
        "faces": {
            "detected": len(rows),
            "kept": len(kept),
            "train": counts.get("train", 0),
            "test": counts.get("test", 0),
            "pose": dict(Counter(r["pose"] for r in kept)),
            "gender": dict(Counter(r["gender"] for r in kept)),
        },
        "rejected": rejected,
        "review": {"path": str(review_path), "rejected_ids": len(review), "applied": applied_review},
        "thresholds": cfg.filters.model_dump(mode="json"),
        "detector": cfg.detector.model_dump(mode="json") | {"gender": cfg.gender.enabled},
        "align": cfg.align.model_dump(mode="json"),
        "split": cfg.split.model_dump(mode="json"),
        "previews": previews,
        "dataset": str(out / "dataset") if kept and with_dataset else None,
        "photo_rejects": photos.log[:1000],
        "seconds": {"detect_align": round(detected.seconds, 3), "total": round(seconds, 3)},
    }

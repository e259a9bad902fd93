"""The photos of a curation run: their content hashes and cache entries (step 1), and the work done on each.

:func:`hash_photos` hashes each photo's bytes, so the same photo reposted (or linked twice) is processed once
(``duplicate_photo``), and picks up its cached detection (``<out>/cache/<sha1>.json``, valid for one
:func:`detector_signature` and :data:`CACHE_VERSION`: :func:`cache_is_valid`). :func:`process_photo`, run in a
detection worker, decodes one photo, detects (unless its cache entry is valid), aligns and measures its largest
face(s): the ``measured`` fields of ``curation.record.FaceRecord``. It applies no threshold.

Example::

    from curation.config import CurationConfig
    from curation.filters import sha1_bytes
    from curation.photos import process_photo
    data = open("photo.jpg", "rb").read()
    res = process_photo("photo.jpg", sha1_bytes(data), None, CurationConfig())
    print(res["status"], [f["blur_var"] for f in res.get("faces", [])])
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from curation import filters as F
from curation.align import align_face, template_points
from curation.config import CurationConfig
from curation.images import decode_photo_scaled
from curation.inputs import PhotoRef, store_relative

log = logging.getLogger(__name__)

__all__ = ["CACHE_VERSION", "Photos", "hash_photos", "detector_signature", "cache_is_valid", "process_photo"]

CACHE_VERSION = 1

_MODELS: dict[str, Any] = {}  # this process's detector and gender model, built on first need


def forget_models() -> None:
    """Drop this process's detector and gender model (a new run may configure others; a forked worker must not
    use its parent's sessions)."""
    _MODELS.clear()


def _models(cfg: CurationConfig, threads: int):
    if "detector" not in _MODELS:
        from curation.detect import GenderClassifier, build_detector

        _MODELS["detector"] = build_detector(cfg.detector, threads=threads)
        _MODELS["gender"] = (
            GenderClassifier(model_path=cfg.gender.model_path, threads=threads) if (cfg.gender.enabled) else None
        )
    return _MODELS["detector"], _MODELS["gender"]


def detector_signature(cfg: CurationConfig) -> str:
    """What the cached detections depend on: backend settings and the gender model switch."""
    d = cfg.detector
    parts = [
        d.backend,
        d.model_path or "embedded",
        d.insightface_root or "",
        d.insightface_pack,
        str(d.score_threshold),
        str(d.nms_threshold),
        str(d.max_side_px),
        str(d.max_faces_per_photo),
        f"refine={d.refine_landmarks}:{d.refine_size_px}",
        f"gender={cfg.gender.enabled}:{cfg.gender.model_path}:chip3",  # chip3: aligned on eyes + nose base
    ]
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def cache_is_valid(cached: dict | None, signature: str) -> bool:
    """True when a cache entry holds detections made with this detector signature and cache version."""
    return bool(cached) and cached.get("version") == CACHE_VERSION and cached.get("signature") == signature


@dataclass
class Photos:
    """Step 1's output: the unique photos to detect (``tasks``: path, sha1, cached result) and what was dropped."""

    refs: list[PhotoRef]
    posts: int
    tasks: list[tuple[str, str, dict | None]] = field(default_factory=list)
    owners: dict[str, PhotoRef] = field(default_factory=dict)  # sha1 -> the first post that linked it
    rejects: Counter = field(default_factory=Counter)
    log: list[dict] = field(default_factory=list)
    cache_hits: int = 0


def hash_photos(refs: list[PhotoRef], posts: int, images: Path, cache_dir: Path, signature: str) -> Photos:
    """Step 1: hash the bytes, so the same photo reposted (or linked twice) is processed once, and pick up each
    photo's cached detection (valid for this detector signature and cache version)."""
    photos = Photos(refs=sorted(refs, key=lambda r: (r.published_at, r.order)), posts=posts)
    store = images.resolve()
    for ref in photos.refs:
        path = images / ref.rel_path
        if not store_relative(ref.rel_path, store):
            # never read a file the feed names outside IMAGES_STORE: it would end up in the pushed dataset
            photos.rejects["outside_store"] += 1
            photos.log.append({"path": ref.rel_path, "reason": "outside_store"})
            log.warning("%s: images[].path outside the image store %s, refused", ref.rel_path, images)
            continue
        try:
            data = path.read_bytes()
        except OSError:
            photos.rejects["missing_file"] += 1
            photos.log.append({"path": ref.rel_path, "reason": "missing_file"})
            continue
        sha1 = F.sha1_bytes(data)
        if sha1 in photos.owners:
            photos.rejects["duplicate_photo"] += 1
            photos.log.append(
                {"path": ref.rel_path, "reason": "duplicate_photo", "same_as": photos.owners[sha1].rel_path}
            )
            continue
        photos.owners[sha1] = ref
        cached = None
        cpath = cache_dir / f"{sha1}.json"
        if cpath.is_file():
            try:
                cached = json.loads(cpath.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                log.warning("%s: unreadable cache entry, detecting again", cpath)
            if cache_is_valid(cached, signature):
                photos.cache_hits += 1
        # the task names the photo, and its worker reads the bytes again (from the page cache, as a rule): handing
        # these bytes on would hold every photo of the crawl in memory between the two steps
        photos.tasks.append((str(path), sha1, cached))
    return photos


def _png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    assert ok
    return buf.tobytes()


def _thumb(rgb: np.ndarray, size: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    s = size / max(h, w)
    small = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    out = np.full((size, size, 3), 255, np.uint8)
    y, x = (size - small.shape[0]) // 2, (size - small.shape[1]) // 2
    out[y : y + small.shape[0], x : x + small.shape[1]] = small
    return out


def process_photo(path: str, sha1: str, cached: dict | None, cfg: CurationConfig, threads: int = 0) -> dict:
    """Decode, detect (unless ``cached`` is valid), align and measure one photo. Runs in a worker; pure of
    thresholds. Each of ``faces`` holds its ``index`` in the photo (0 = largest) and the ``measured`` fields of
    ``curation.record.FaceRecord``."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return {"sha1": sha1, "status": "missing_file", "detail": str(exc)}
    rgb, reason, detail, scale = decode_photo_scaled(
        data, max_pixels=cfg.filters.max_image_pixels, draft_min_pixels=cfg.detector.jpeg_draft_min_pixels
    )
    if rgb is None:
        return {"sha1": sha1, "status": reason, "detail": detail}
    h, w = rgb.shape[:2]  # of the decoded pixels; the cache and the metrics use the stored photo's pixels

    def to_photo(p: np.ndarray) -> np.ndarray:  # decoded pixel -> stored photo pixel (pixel centres)
        return ((np.asarray(p, np.float32) + 0.5) / scale - 0.5).astype(np.float32)

    sig = detector_signature(cfg)
    if cache_is_valid(cached, sig):
        detection, new_cache = cached, None
    else:
        detector, gender_model = _models(cfg, threads)
        from curation.detect import Face, refine_landmarks

        faces: list[Face] = detector.detect(rgb)[: cfg.detector.max_faces_per_photo]
        recs = []
        for f in faces:
            if cfg.detector.refine_landmarks:
                f = refine_landmarks(detector, rgb, f, size=cfg.detector.refine_size_px)
            d = f.to_json()
            if d["gender"] is None and gender_model is not None:
                d["gender"], d["gender_prob"] = gender_model.predict(rgb, f.landmarks)
            d["box"] = [float(v) / scale for v in d["box"]]
            d["landmarks"] = to_photo(f.landmarks).tolist()
            recs.append(d)
        detection = {"version": CACHE_VERSION, "signature": sig, "width": round(w / scale),
                     "height": round(h / scale), "faces": recs}  # fmt: skip
        new_cache = detection
    a = cfg.align
    eyes_t = template_points(a.output_size_px, face_scale=a.face_scale, shift_y=a.shift_y)[:2]
    out_faces = []
    for i, d in enumerate(detection["faces"]):
        lm = np.asarray(d["landmarks"], np.float32)  # stored photo pixels
        lm_dec = (lm + 0.5) * scale - 0.5
        crop = align_face(
            rgb,
            lm_dec,
            output_size_px=a.output_size_px,
            warp_size_px=a.warp_size_px,
            face_scale=a.face_scale,
            shift_y=a.shift_y,
            feather=a.feather,
            feather_radius=a.feather_radius,
        )
        out_faces.append({
            "index": i,
            "image": _png(crop),
            "face_score": float(d["score"]),
            "blur_var": F.laplacian_variance(crop),
            "eye_distance": F.eye_distance(lm),
            "eye_brightness": F.eye_brightness(crop, eyes_t),
            "yaw": F.estimate_yaw(lm),
            "face_area_ratio": F.face_area_ratio(np.asarray(d["box"]) * scale, w, h),
            "gender": d.get("gender") or "unknown",
            "phash": F.phash(crop),
            "phash_mirror": F.phash(np.ascontiguousarray(crop[:, ::-1])),  # a reposted mirror image is a duplicate
            "box": d["box"],
            "landmarks": d["landmarks"],
        })  # fmt: skip
    res = {
        "sha1": sha1,
        "status": "ok" if out_faces else "no_face",
        "detail": "",
        "width": w,
        "height": h,
        "faces": out_faces,
        "cache": new_cache,
    }
    if not out_faces:
        res["thumb"] = _png(_thumb(rgb, a.output_size_px))
    return res

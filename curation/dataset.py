"""The curation run: crawl feed + image store -> aligned 64x64 face ``datasets`` folder (contracts section 3).

Steps: read the feed (one record per post, ``images[].path`` relative to the image store); hash each photo's
bytes (same bytes = ``duplicate_photo``, kept once); for each new photo, decode, detect (or reuse
``cache/<sha1>.json``), align and measure its largest face(s) in a pool of ``workers`` processes; then,
in this process only, apply the thresholds, drop near-duplicates (perceptual hash of the face or of its
mirror image, first published kept) and the faces rejected on the review page, split, and write:

``<out>/dataset/``: ``DatasetDict`` (``save_to_disk``; written to a temp folder, then renamed), splits
``train`` / ``test`` (a face's split depends only on ``split.seed`` and its ``face_id``), columns:

=================  ==========  ===============================================================
column             type        meaning
=================  ==========  ===============================================================
``image``          Image()     64x64 RGB face, aligned (PNG)
``face_id``        string      ``<sha1 of the photo bytes>[:16]-<face index, 0 = largest>``
``article_id``     string      from the feed
``image_url``      string      source image URL
``published_at``   string      from the feed (ISO 8601, +08:00)
``face_score``     float32     detector confidence
``blur_var``       float32     Laplacian variance of the 64x64 aligned face
``eye_distance``   float32     pixels between the eyes, in the source photo
``eye_brightness`` float32     mean grey level of the eye patches, 0..255
``yaw``            float32     degrees from the 5 landmarks, + = nose to the image right
``pose``           string      ``frontal`` / ``left`` / ``right``
``gender``         string      ``female`` / ``male`` / ``unknown``
``phash``          string      64-bit perceptual hash of the aligned face, 16 hex digits
=================  ==========  ===============================================================

Beside it: ``curation_report.json`` (counts in, kept, rejected per reason, thresholds), ``previews/``
(contact sheets of kept faces and per reject reason, histograms with thresholds), ``cache/`` (detections
by photo content hash, in the stored photo's pixels: a rerun only detects new photos; changing a filter
threshold re-runs no detection; a crashed run resumes),
``faces/<face_id>.png`` and ``faces.jsonl`` (every detected face with status, reason, split and metrics,
for the review page). Review decisions: ``review_path`` (default ``<out>/review.json``) holds
``{"version": 1, "rejected": [face_id, ...]}``; those faces are dropped as ``review``.

Example::

    from curation.config import CurationConfig
    from curation.dataset import run_curation
    cfg = CurationConfig(feed="demo_out/feed.jsonl", images="demo_out/images", out="demo_out/curated")
    report = run_curation(cfg)
    print(report["faces"]["kept"], report["rejected"])
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from common.fileio import atomic_replace_dir, atomic_write, iter_jsonl
from curation import filters as F
from curation.align import align_face, template_points
from curation.config import CurationConfig
from curation.images import decode_photo_scaled

log = logging.getLogger(__name__)

__all__ = [
    "CurationError",
    "FEATURE_COLUMNS",
    "read_feed",
    "run_curation",
    "process_photo",
    "load_review",
    "assign_splits",
]

CACHE_VERSION = 1
FEATURE_COLUMNS = (
    "image", "face_id", "article_id", "image_url", "published_at", "face_score", "blur_var",
    "eye_distance", "eye_brightness", "yaw", "pose", "gender", "phash",
)  # fmt: skip
_FLOAT_COLUMNS = ("face_score", "blur_var", "eye_distance", "eye_brightness", "yaw")


class CurationError(RuntimeError):
    """Bad input for the run; a one-line message naming the path and the fix."""


# ----------------------------------------------------------------------------------------------- feed


@dataclass
class PhotoRef:
    """One downloaded image of one post."""

    article_id: str
    image_url: str
    published_at: str
    rel_path: str
    order: int


def read_feed(feed: Path) -> tuple[list[PhotoRef], int]:
    """Photo references of a crawl feed, and the number of posts read."""
    if not feed.is_file():
        raise CurationError(
            f"{feed}: feed not found; run the crawl first "
            f"(scrapy crawl ptt_beauty -s IMAGES_STORE=<images> -O {feed}) or pass feed=<path to feed.jsonl>"
        )
    refs: list[PhotoRef] = []
    posts = 0

    def bad(n: int, msg: str) -> CurationError:
        return CurationError(f"{feed}:{n}: not a JSON line ({msg}); re-run the crawl with -O")

    for lineno, rec in iter_jsonl(feed, bad):
        if not isinstance(rec, dict) or "article_id" not in rec:
            raise CurationError(f"{feed}:{lineno}: not a feed record (no article_id); see docs/contracts.md")
        posts += 1
        for img in rec.get("images") or []:
            if not isinstance(img, dict) or not img.get("path"):
                continue
            refs.append(
                PhotoRef(
                    article_id=str(rec["article_id"]),
                    image_url=str(img.get("url", "")),
                    published_at=str(rec.get("published_at") or ""),
                    rel_path=str(img["path"]),
                    order=len(refs),
                )
            )
    return refs, posts


def load_review(path: Path) -> set[str]:
    """Face ids rejected on the review page (empty when the file does not exist)."""
    if not path.is_file():
        return set()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CurationError(f"{path}: review file is not JSON ({exc}); export it again from the review page") from None
    if not isinstance(data, dict) or data.get("version") != 1 or not isinstance(data.get("rejected"), list):
        raise CurationError(f'{path}: review file must be {{"version": 1, "rejected": [face_id, ...]}}')
    return {str(x) for x in data["rejected"]}


# --------------------------------------------------------------------------------------------- worker

_STATE: dict[str, Any] = {}  # per-process detector / gender model, built on first need


def _init_worker(cfg_json: str, threads: int) -> None:
    _STATE.clear()
    _STATE["cfg"] = CurationConfig.model_validate_json(cfg_json)
    _STATE["threads"] = threads


def _models(cfg: CurationConfig, threads: int):
    if "detector" not in _STATE:
        from curation.detect import GenderClassifier, build_detector

        _STATE["detector"] = build_detector(cfg.detector, threads=threads)
        _STATE["gender"] = (
            GenderClassifier(model_path=cfg.gender.model_path, threads=threads) if (cfg.gender.enabled) else None
        )
    return _STATE["detector"], _STATE["gender"]


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
    """Decode, detect (unless ``cached``), align and measure one photo. Runs in a worker; pure of thresholds."""
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
    detection = None
    if cached and cached.get("version") == CACHE_VERSION and cached.get("signature") == sig:
        detection = cached
    if detection is None:
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
    else:
        new_cache = None
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
            "png": _png(crop),
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


def _worker(args: tuple[str, str, dict | None]) -> dict:
    path, sha1, cached = args
    try:
        return process_photo(path, sha1, cached, _STATE["cfg"], _STATE["threads"])
    except ValueError as exc:  # degenerate landmarks: no usable face; reject the photo, keep going
        return {"sha1": sha1, "status": "no_face", "detail": f"ValueError: {exc}"}
    except cv2.error as exc:  # an image OpenCV cannot process (odd shape or depth): reject it, keep going
        return {"sha1": sha1, "status": "unreadable", "detail": f"cv2.error: {str(exc).strip().splitlines()[-1]}"}


# ------------------------------------------------------------------------------------------- the run


def assign_splits(face_ids: list[str], cfg) -> list[str]:
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


def _iter_results(tasks: list[tuple[str, str, dict | None]], cfg: CurationConfig, workers: int):
    from tqdm.auto import tqdm

    bar = tqdm(total=len(tasks), desc="curate", unit="photo", mininterval=1.0, disable=None)
    cfg_json = cfg.model_dump_json()
    try:
        if workers <= 1 or len(tasks) <= 1:
            _init_worker(cfg_json, 0)
            for t in tasks:
                yield _worker(t)
                bar.update()
        else:
            ctx = get_context("fork" if "fork" in get_all_start_methods() else "spawn")
            with ProcessPoolExecutor(
                workers, mp_context=ctx, initializer=_init_worker, initargs=(cfg_json, 1)
            ) as pool:
                try:
                    for r in pool.map(_worker, tasks, chunksize=max(1, min(8, len(tasks) // (workers * 4)))):
                        yield r
                        bar.update()
                except BrokenProcessPool:
                    raise CurationError(
                        f"a detection worker died after {bar.n} of {len(tasks)} photos (out of memory?); "
                        "run again to resume from the cache, with fewer workers or a lower filters.max_image_pixels"
                    ) from None
    finally:
        bar.close()


def run_curation(cfg: CurationConfig) -> dict:
    """Run the whole stage; returns the report (also written to ``<out>/curation_report.json``)."""
    t0 = time.perf_counter()
    for key in ("feed", "images", "out"):
        if not getattr(cfg, key):
            raise CurationError(f"{key} is not set; pass {key}=<path> on the command line or in the config")
    feed, images, out = Path(cfg.feed), Path(cfg.images), Path(cfg.out)
    refs, posts = read_feed(feed)
    if not images.is_dir():
        raise CurationError(
            f"{images}: image store not found; run the crawl with downloads on "
            f"(scrapy crawl ptt_beauty -s IMAGES_STORE={images} ...) or pass images=<IMAGES_STORE>"
        )
    if not refs:
        raise CurationError(
            f"{feed}: no downloaded images in {posts} posts (no images[].path); crawl again with "
            "-s IMAGES_STORE=... so that images are downloaded"
        )
    out.mkdir(parents=True, exist_ok=True)
    cache_dir = out / "cache"
    cache_dir.mkdir(exist_ok=True)
    review_path = Path(cfg.review_path) if cfg.review_path else out / "review.json"
    review = load_review(review_path)

    # 1. hash the bytes: the same photo reposted (or linked twice) is processed once
    refs.sort(key=lambda r: (r.published_at, r.order))
    photo_rejects: Counter[str] = Counter()
    owners: dict[str, PhotoRef] = {}
    photo_log: list[dict] = []
    tasks: list[tuple[str, str, dict | None]] = []
    sig = detector_signature(cfg)
    cache_hits = 0
    for ref in refs:
        path = images / ref.rel_path
        try:
            data = path.read_bytes()
        except OSError:
            photo_rejects["missing_file"] += 1
            photo_log.append({"path": ref.rel_path, "reason": "missing_file"})
            continue
        sha1 = F.sha1_bytes(data)
        if sha1 in owners:
            photo_rejects["duplicate_photo"] += 1
            photo_log.append({"path": ref.rel_path, "reason": "duplicate_photo", "same_as": owners[sha1].rel_path})
            continue
        owners[sha1] = ref
        cached = None
        cpath = cache_dir / f"{sha1}.json"
        if cpath.is_file():
            try:
                cached = json.loads(cpath.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                log.warning("%s: unreadable cache entry, detecting again", cpath)
            if cached and cached.get("signature") == sig and cached.get("version") == CACHE_VERSION:
                cache_hits += 1
        tasks.append((str(path), sha1, cached))

    workers = cfg.workers or (os.cpu_count() or 1)
    log.info(
        "%d photos (%d unique, %d cached) from %d posts; %d workers", len(refs), len(tasks), cache_hits, posts, workers
    )

    # 2. detect + align + measure (workers), 3. judge (here)
    t = cfg.filters
    th = F.FilterThresholds.from_config(t)
    faces_dir = out / "faces"
    if cfg.write_faces:
        faces_dir.mkdir(exist_ok=True)
    rows: list[dict] = []
    photo_thumbs: dict[str, list[bytes]] = {}
    detected_photos = 0
    t_detect = time.perf_counter()
    for res in _iter_results(tasks, cfg, workers):
        ref = owners[res["sha1"]]
        if res.get("cache"):
            atomic_write(cache_dir / f"{res['sha1']}.json", json.dumps(res["cache"]))
            detected_photos += 1
        if res["status"] != "ok":
            photo_rejects[res["status"]] += 1
            photo_log.append({"path": ref.rel_path, "reason": res["status"], "detail": res.get("detail", "")})
            if res.get("thumb"):
                photo_thumbs.setdefault(res["status"], []).append(res["thumb"])
            if res["status"] in ("unreadable", "too_large"):
                log.warning("%s: %s (%s)", ref.rel_path, res["status"], res.get("detail", ""))
            continue
        for f in res["faces"]:
            face_id = f"{res['sha1'][:16]}-{f['index']}"
            row = {
                "face_id": face_id, "article_id": ref.article_id, "image_url": ref.image_url,
                "published_at": ref.published_at, "photo": ref.rel_path,
                **{k: f[k] for k in ("face_score", "blur_var", "eye_distance", "eye_brightness", "yaw",
                                     "face_area_ratio", "gender", "phash", "phash_mirror", "box", "landmarks")},
            }  # fmt: skip
            row["pose"] = F.pose_label(row["yaw"], t.frontal_yaw_deg)
            row["reason"] = F.judge_face(row, th)
            row["_png"] = f["png"]
            rows.append(row)
    t_detect = time.perf_counter() - t_detect

    # 4. near-duplicates across the whole dataset (first published kept), then the review decisions
    rows.sort(key=lambda r: (r["published_at"], r["face_id"]))
    index = F.NearDuplicateIndex(t.phash_max_distance)
    for r in rows:
        if r["reason"] is None:
            dup = index.find(r["phash_mirror"]) if t.phash_check_mirror else None
            if dup is None:
                dup = index.add(r["phash"], r["face_id"])
            if dup is not None:
                r["reason"], r["duplicate_of"] = "near_duplicate", dup
    applied_review = 0
    for r in rows:
        if r["reason"] is None and r["face_id"] in review:
            r["reason"] = "review"
            applied_review += 1
    # 5. split: stable per face, with a floor on the test split for small sets
    kept = [r for r in rows if r["reason"] is None]
    for r, split in zip(kept, assign_splits([r["face_id"] for r in kept], cfg.split), strict=True):
        r["split"] = split
    for r in rows:
        r["status"] = "kept" if r["reason"] is None else "rejected"
        r.setdefault("split", None)

    face_rejects = Counter(r["reason"] for r in rows if r["reason"] is not None)
    rejected = {k: photo_rejects.get(k, 0) + face_rejects.get(k, 0) for k in F.REASONS}
    counts = Counter(r["split"] for r in kept)

    # 6. write: faces/ + faces.jsonl, previews, dataset (atomic), report (atomic)
    if cfg.write_faces:
        lines = []
        for r in rows:
            p = faces_dir / f"{r['face_id']}.png"
            if not p.is_file() or p.read_bytes() != r["_png"]:
                atomic_write(p, r["_png"])
            lines.append(json.dumps({k: v for k, v in r.items() if not k.startswith("_")}, ensure_ascii=False))
        atomic_write(out / "faces.jsonl", "".join(line + "\n" for line in lines))

    from curation.previews import write_previews

    previews = write_previews(out / "previews", rows, photo_thumbs, cfg)
    if kept:
        _write_dataset(out / "dataset", kept)
    report = {
        "version": 1,
        "feed": str(feed),
        "images": str(images),
        "out": str(out),
        "posts": posts,
        "counts": {  # the one-line summary; the sections below have the detail
            "photos_in": len(refs),
            "faces_detected": len(rows),
            "kept": len(kept),
            "train": counts.get("train", 0),
            "test": counts.get("test", 0),
            "rejected": {k: v for k, v in rejected.items() if v},
        },
        "photos": {
            "in": len(refs),
            "unique": len(tasks),
            "detected_now": detected_photos,
            "from_cache": cache_hits,
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
        "dataset": str(out / "dataset") if kept else None,
        "photo_rejects": photo_log[:1000],
        "seconds": {"detect_align": round(t_detect, 3), "total": round(time.perf_counter() - t0, 3)},
    }
    atomic_write(out / "curation_report.json", json.dumps(report, indent=2, ensure_ascii=False))
    if not kept:
        raise CurationError(
            f"{out / 'curation_report.json'}: no face kept out of {len(rows)} detected in {len(tasks)} photos; "
            "look at previews/ and relax the filters (e.g. filters.min_face_area_ratio=0.01)"
        )
    return report


def _write_dataset(target: Path, kept: list[dict]) -> None:
    """``save_to_disk`` into a temp folder beside ``target``, then swap it in (never a half-written dataset)."""
    import datasets
    from datasets import Dataset, DatasetDict, Features, Image, Value

    datasets.disable_progress_bars()  # our own bar covers the run; theirs would print one line per split

    features = Features({
        "image": Image(),
        **{c: Value("float32") if c in _FLOAT_COLUMNS else Value("string") for c in FEATURE_COLUMNS[1:]},
    })  # fmt: skip
    splits = {}
    for split in ("train", "test"):
        part = [r for r in kept if r["split"] == split]
        cols: dict[str, list] = {c: [] for c in FEATURE_COLUMNS}
        for r in part:
            cols["image"].append({"bytes": r["_png"], "path": None})
            for c in FEATURE_COLUMNS[1:]:
                cols[c].append(r[c])
        splits[split] = Dataset.from_dict(cols, features=features)
    with atomic_replace_dir(target) as tmp:
        DatasetDict(splits).save_to_disk(str(tmp))

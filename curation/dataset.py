"""The curation run: crawl feed + image store -> aligned 64x64 face ``datasets`` folder (contracts section 3).

Steps, each a function of its own that :func:`run_curation` calls in turn: :func:`read_inputs` (the feed, through
``scrapy_ptt.items.read_posts``, and the image store), :func:`hash_photos`, :func:`detect_faces` (workers +
cache), :func:`judge_dataset` (near-duplicates, review, split), then :func:`write_faces`, ``curation.previews``,
``curation.store.write_dataset`` and :func:`build_report`. In words: read the feed (one record per post,
``images[].path`` relative to the image store); hash each photo's bytes (same bytes = ``duplicate_photo``, kept
once); for each new photo, decode, detect (or reuse ``cache/<sha1>.json``), align and measure its largest face(s)
in a pool of ``workers`` processes; then, in this process only, apply the thresholds, drop near-duplicates
(perceptual hash of the face or of its mirror image, first published kept) and the faces rejected on the review
page, split, and write:

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
import signal
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from common.fileio import atomic_write, clean_stale_temps
from curation import filters as F
from curation.align import align_face, template_points
from curation.config import CurationConfig
from curation.images import decode_photo_scaled
from curation.store import FEATURE_COLUMNS, write_dataset
from scrapy_ptt.items import FeedError, read_posts

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
    hint = f"run the crawl first (scrapy crawl ptt_beauty -s IMAGES_STORE=<images> -O {feed}) or pass feed=<path>"
    try:
        records = read_posts(feed, missing_hint=hint)
    except FeedError as exc:
        raise CurationError(str(exc)) from None
    refs: list[PhotoRef] = []
    posts = 0
    for rec in records:
        posts += 1
        images = rec.get("images") or []
        if not isinstance(images, list):
            raise CurationError(
                f'{feed}: post {rec["article_id"]}: "images" is {images!r}, not a list of {{url, path}}; '
                "is this a ptt_beauty feed (docs/contracts.md section 1)? crawl it again"
            )
        for img in images:
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


def store_relative(rel_path: str, store: Path) -> bool:
    """True when ``rel_path`` (a feed's ``images[].path``) names a file inside the resolved image store ``store``:
    relative, no ``..`` climbing out, no symlink leading out."""
    if not rel_path or Path(rel_path).is_absolute() or rel_path.startswith(("/", "\\")) or ":" in rel_path[:3]:
        return False
    try:
        return (store / rel_path).resolve().is_relative_to(store)
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte
        return False


def load_review(path: Path) -> set[str]:
    """Face ids rejected on the review page (empty when the file does not exist), through the review file's
    one reader (``curation.review.read_review_file``)."""
    from curation.review import ReviewError, read_review_file

    if not path.is_file():
        return set()
    try:
        return set(read_review_file(path))
    except ReviewError as exc:
        raise CurationError(str(exc)) from None


# --------------------------------------------------------------------------------------------- worker

_STATE: dict[str, Any] = {}  # per-process detector / gender model, built on first need


def _die_with_parent(parent_pid: int) -> None:
    """Make this worker exit when the process that started it dies, even by ``kill -9`` or the OOM killer (which
    give the pool no chance to stop its workers): an orphan would keep detecting forever and hold the parent's
    stdout open, so ``ptt-curate ... | tee log`` would never return. Linux: the kernel sends SIGKILL on the
    parent's death (``prctl(PR_SET_PDEATHSIG)``); everywhere: a thread polls the parent pid once a second."""
    import threading

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass  # the watchdog below still works
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _init_worker(cfg_json: str, threads: int, parent_pid: int | None = None) -> None:
    if parent_pid is not None:
        _die_with_parent(parent_pid)
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
                workers, mp_context=ctx, initializer=_init_worker, initargs=(cfg_json, 1, os.getpid())
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


@dataclass
class Detected:
    """Step 2's output: one row per detected face (judged alone), rejected photos' thumbnails, timing."""

    rows: list[dict]
    thumbs: dict[str, list[bytes]]
    detected_now: int
    seconds: float


def read_inputs(cfg: CurationConfig) -> tuple[Path, Path, Path, list[PhotoRef], int]:
    """``(feed, images, out, photo refs, posts)`` after checking that the feed and the image store are there."""
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
    return feed, images, out, refs, posts


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
            if cached and cached.get("signature") == signature and cached.get("version") == CACHE_VERSION:
                photos.cache_hits += 1
        photos.tasks.append((str(path), sha1, cached))
    return photos


def detect_faces(photos: Photos, cfg: CurationConfig, workers: int, cache_dir: Path) -> Detected:
    """Step 2: detect, align and measure every photo (in ``workers`` processes), writing each fresh result to the
    cache; judge each face alone against the thresholds (rejected photos are counted into ``photos``)."""
    t = cfg.filters
    th = F.FilterThresholds.from_config(t)
    rows: list[dict] = []
    thumbs: dict[str, list[bytes]] = {}
    detected_now = 0
    t0 = time.perf_counter()
    for res in _iter_results(photos.tasks, cfg, workers):
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
    return Detected(rows=rows, thumbs=thumbs, detected_now=detected_now, seconds=time.perf_counter() - t0)


def judge_dataset(rows: list[dict], review: set[str], cfg: CurationConfig) -> tuple[list[dict], int]:
    """Steps 3-4 over the whole set: near-duplicates (first published kept), then the review decisions, then
    the split (stable per face, with a floor on the test split for small sets). Returns ``(kept rows, number of
    review rejections applied)``; every row gets ``reason``, ``status`` and ``split``."""
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


def write_faces(out: Path, rows: list[dict]) -> None:
    """``faces/<face_id>.png`` (rewritten only when changed) and ``faces.jsonl``, one line per detected face."""
    faces_dir = out / "faces"
    faces_dir.mkdir(exist_ok=True)
    lines = []
    for r in rows:
        p = faces_dir / f"{r['face_id']}.png"
        if not p.is_file() or p.read_bytes() != r["_png"]:
            atomic_write(p, r["_png"])
        lines.append(json.dumps({k: v for k, v in r.items() if not k.startswith("_")}, ensure_ascii=False))
    atomic_write(out / "faces.jsonl", "".join(line + "\n" for line in lines))


def build_report(
    cfg: CurationConfig,
    *,
    feed: Path,
    images: Path,
    out: Path,
    photos: Photos,
    detected: Detected,
    kept: list[dict],
    review_path: Path,
    review: set[str],
    applied_review: int,
    previews: dict,
    seconds: float,
) -> dict:
    """The ``curation_report.json`` object (contracts.md section 3)."""
    rows = detected.rows
    face_rejects = Counter(r["reason"] for r in rows if r["reason"] is not None)
    rejected = {k: photos.rejects.get(k, 0) + face_rejects.get(k, 0) for k in F.REASONS}
    counts = Counter(r["split"] for r in kept)
    return {
        "version": 1,
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
        "dataset": str(out / "dataset") if kept else None,
        "photo_rejects": photos.log[:1000],
        "seconds": {"detect_align": round(detected.seconds, 3), "total": round(seconds, 3)},
    }


def run_curation(cfg: CurationConfig) -> dict:
    """Run the whole stage; returns the report (also written to ``<out>/curation_report.json``)."""
    from curation.previews import write_previews

    t0 = time.perf_counter()
    feed, images, out, refs, posts = read_inputs(cfg)
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

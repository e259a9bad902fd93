"""Offline photos and constructed bad cases for the curation tests and ``benchmarks/bench_curation.py``.

Real photos that ship in installed packages: InsightFace's ``t1.jpg`` (group of 6) and
``Tom_Hanks_54745.png``, scikit-image's ``astronaut``. Transforms build the cases each filter must catch:
rotation about a point, shrinking, Gaussian blur, darkened eyes, and a feed + image store in the crawl's
layout (contracts sections 1-2) around any set of photos.

Example::

    from tests._synth import astronaut, rotate, write_store   # from the repository root
    photos = {"a.png": astronaut(), "b.png": rotate(astronaut(), 25.0)}
    feed = write_store("/tmp/store", photos)   # /tmp/store/feed.jsonl, /tmp/store/images/full/*.png
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

__all__ = [
    "insightface_image",
    "astronaut",
    "t1",
    "rotate",
    "shrink",
    "blur",
    "darken_eyes",
    "encode",
    "write_store",
]


def insightface_image(name: str) -> np.ndarray:
    import insightface

    path = Path(insightface.__file__).parent / "data" / "images" / name
    return np.asarray(Image.open(path).convert("RGB"))


def t1() -> np.ndarray:
    """(886, 1280, 3) group photo, 6 faces each ~1.1-1.4% of the photo."""
    return insightface_image("t1.jpg")


def astronaut() -> np.ndarray:
    """(512, 512, 3) scikit-image's astronaut (Eileen Collins), one frontal face."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def rotate(rgb: np.ndarray, deg: float, center: tuple[float, float] | None = None) -> np.ndarray:
    """Rotate counter-clockwise by ``deg`` about ``center`` (default the photo centre), reflecting the border."""
    h, w = rgb.shape[:2]
    c = center if center is not None else ((w - 1) / 2, (h - 1) / 2)
    m = cv2.getRotationMatrix2D(c, deg, 1.0)
    return cv2.warpAffine(rgb, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def shrink(rgb: np.ndarray, factor: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    return cv2.resize(rgb, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)


def blur(rgb: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(rgb, (0, 0), sigmaX=sigma)


def darken_eyes(rgb: np.ndarray, landmarks: np.ndarray, *, radius_frac: float = 0.3, level: int = 15) -> np.ndarray:
    """Paint dark discs (radius ``radius_frac`` x eye distance) over both eyes: sunglasses."""
    out = rgb.copy()
    lm = np.asarray(landmarks, np.float64)
    r = max(2, round(radius_frac * float(np.hypot(*(lm[1] - lm[0])))))
    for x, y in lm[:2]:
        cv2.circle(out, (round(x), round(y)), r, (level, level, level), -1, lineType=cv2.LINE_AA)
    return out


def encode(rgb: np.ndarray, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt, **kw)
    return buf.getvalue()


def write_store(root: str | Path, photos: dict[str, np.ndarray | bytes], *, posts: int = 1) -> Path:
    """Write ``root/images/full/<name>`` and ``root/feed.jsonl`` (contracts 1-2); returns the feed path.

    Photos are spread over ``posts`` posts, one day apart, in the order given.
    """
    root = Path(root)
    (root / "images" / "full").mkdir(parents=True, exist_ok=True)
    records = [
        {
            "article_id": f"M.{1700000000 + i * 86400}.A.{i:03X}",
            "url": f"http://127.0.0.1/bbs/Beauty/M.{1700000000 + i * 86400}.A.{i:03X}.html",
            "board": "Beauty",
            "published_at": f"2023-11-{15 + i:02d}T06:13:20+08:00",
            "image_urls": [],
            "images": [],
            "image_failures": [],
        }
        for i in range(posts)
    ]
    for k, (name, photo) in enumerate(photos.items()):
        data = photo if isinstance(photo, bytes) else encode(photo, "JPEG" if name.endswith(".jpg") else "PNG")
        rel = f"full/{name}"
        (root / "images" / rel).write_bytes(data)
        url = f"http://127.0.0.1/img/{name}"
        rec = records[k % posts]
        rec["image_urls"].append(url)
        rec["images"].append(
            {"url": url, "path": rel, "checksum": hashlib.md5(data).hexdigest(), "status": "downloaded"}
        )
    feed = root / "feed.jsonl"
    feed.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return feed

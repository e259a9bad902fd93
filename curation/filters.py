"""Face quality metrics, pose, hashes and the reject decision (pure: numpy and cv2 only).

Metrics (fields of the face record, ``curation.record.FaceRecord``; thresholds in ``curation.config.FilterConfig``):

- ``blur_var``: variance of the Laplacian of the grey 64x64 aligned face (what the model will see);
  low means blurry. Reject under ``min_blur_var`` (seeds used 50 and 60).
- ``eye_distance``: pixels between the eye centres in the source photo; small means profile, one eye or a
  tiny face. Reject under ``min_eye_distance_px`` (the homework recipe: 15).
- ``eye_brightness``: mean grey level (0..255) of two square patches centred on the template eye positions
  of the aligned face; low means hair, sunglasses or closed, shadowed eyes. Reject under
  ``min_eye_brightness`` (the homework recipe: 60).
- ``yaw``: degrees, from the 5 landmarks (:func:`estimate_yaw`); ``pose`` is ``frontal`` when
  ``|yaw| < frontal_yaw_deg`` (20, the attention recipe), else ``left`` / ``right`` = the side of the image the nose
  points to. Optional reject over ``max_abs_yaw_deg``.
- ``face_area_ratio``: detector box area / photo area; reject under ``min_face_area_ratio`` (1.5%, as the
  attention recipe).
- ``phash``: 64-bit DCT perceptual hash of the aligned face, 16 hex digits; near-duplicates are faces within
  ``phash_max_distance`` bits (Hamming) of an earlier kept face, or whose mirror image is
  (:class:`NearDuplicateIndex`).

Example::

    import numpy as np
    from curation.filters import laplacian_variance, phash, hamming, estimate_yaw
    face = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    print(laplacian_variance(face), phash(face), hamming(phash(face), phash(face[:, ::-1])))
    lm = np.array([[30, 40], [50, 40], [40, 52], [32, 62], [48, 62]], np.float32)
    print(estimate_yaw(lm))   # 0.0 for a symmetric face
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from curation.config import FilterConfig

__all__ = [
    "REASONS",
    "laplacian_variance",
    "eye_distance",
    "eye_brightness",
    "estimate_yaw",
    "pose_label",
    "face_area_ratio",
    "phash",
    "hamming",
    "sha1_bytes",
    "judge_face",
    "NearDuplicateIndex",
]

# Every reject reason a run can count, photo-level first, in the order they are checked.
REASONS = (
    "unreadable",  # corrupt, truncated, zero-byte, not an image
    "too_large",  # more pixels than max_image_pixels (decompression bomb guard)
    "missing_file",  # the feed points to a file that is not in the image store
    "outside_store",  # the feed's images[].path is absolute or climbs out of the image store (../, a symlink)
    "duplicate_photo",  # same bytes as an earlier photo (exact hash)
    "no_face",  # the detector found no face with landmarks
    "small_face",
    "eye_distance",
    "blur",
    "eye_brightness",
    "pose",
    "gender",
    "near_duplicate",
    "review",
)

# Nose-tip depth in front of the eye centres over half the eye distance, for an average adult head
# (about 22 mm over 32 mm): the nose's sideways offset, in half eye distances, is tan(yaw) * this.
_NOSE_DEPTH_RATIO = 0.69


def laplacian_variance(rgb_or_gray: np.ndarray) -> float:
    """Variance of the 3x3 Laplacian of the grey image (float64)."""
    g = rgb_or_gray if rgb_or_gray.ndim == 2 else cv2.cvtColor(rgb_or_gray, cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(g, cv2.CV_64F).var())


def eye_distance(landmarks: np.ndarray) -> float:
    """Pixels between the two eye landmarks."""
    lm = np.asarray(landmarks, np.float64)
    return float(np.hypot(*(lm[1] - lm[0])))


def eye_brightness(aligned_rgb: np.ndarray, eyes: np.ndarray, *, patch_frac: float = 0.1) -> float:
    """Mean grey level of two square patches (side ``patch_frac`` of the crop) at the eye positions ``eyes`` (2, 2)."""
    g = cv2.cvtColor(aligned_rgb, cv2.COLOR_RGB2GRAY).astype(np.float64)
    size = g.shape[0]
    half = max(1, round(patch_frac * size / 2))
    vals = []
    for x, y in np.asarray(eyes, np.float64):
        xi, yi = round(x), round(y)
        patch = g[max(0, yi - half) : yi + half + 1, max(0, xi - half) : xi + half + 1]
        if patch.size:
            vals.append(patch.mean())
    return float(np.mean(vals)) if vals else 0.0


def estimate_yaw(landmarks: np.ndarray) -> float:
    """Yaw in degrees from 5 landmarks: positive when the nose points to the image right.

    In the frame where the eye line is horizontal, the nose tip's offset from the eye midpoint, in half eye
    distances, is ``tan(yaw) * depth ratio`` for a head rotating about a vertical axis.
    """
    lm = np.asarray(landmarks, np.float64)
    le, re, nose = lm[0], lm[1], lm[2]
    axis = re - le
    half = np.hypot(*axis) / 2
    if half < 1e-6:
        return 90.0
    u = axis / (2 * half)
    t = float(np.dot(nose - (le + re) / 2, u) / half)
    return math.degrees(math.atan(t / _NOSE_DEPTH_RATIO))


def pose_label(yaw_deg: float, frontal_yaw_deg: float = 20.0) -> str:
    if abs(yaw_deg) < frontal_yaw_deg:
        return "frontal"
    return "right" if yaw_deg > 0 else "left"


def face_area_ratio(box: np.ndarray, width: int, height: int) -> float:
    """Box area clipped to the photo, over the photo area."""
    x1, y1, x2, y2 = (float(v) for v in box)
    w = max(0.0, min(x2, width) - max(x1, 0.0))
    h = max(0.0, min(y2, height) - max(y1, 0.0))
    return w * h / float(width * height)


def phash(rgb: np.ndarray) -> str:
    """64-bit DCT perceptual hash (as imagehash.phash: 32x32 grey, DCT, top-left 8x8 > median), 16 hex digits."""
    g = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    small = cv2.resize(g, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8]
    bits = (low > np.median(low)).ravel()
    value = 0
    for b in bits:
        value = (value << 1) | int(b)
    return f"{value:016x}"


def hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def sha1_bytes(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def judge_face(m: dict, t: FilterConfig) -> str | None:
    """First reject reason for one face's metrics ``m`` (a face record's fields) under the thresholds ``t``, or
    None to keep it."""
    if m["face_area_ratio"] < t.min_face_area_ratio:
        return "small_face"
    if m["eye_distance"] < t.min_eye_distance_px:
        return "eye_distance"
    if m["blur_var"] < t.min_blur_var:
        return "blur"
    if m["eye_brightness"] < t.min_eye_brightness:
        return "eye_brightness"
    if t.max_abs_yaw_deg is not None and abs(m["yaw"]) > t.max_abs_yaw_deg:
        return "pose"
    if t.keep_gender is not None and m["gender"] != t.keep_gender:
        return "gender"
    return None


class NearDuplicateIndex:
    """Kept perceptual hashes; ``add`` answers whether a new hash is within ``max_distance`` of one.

    Pigeonhole index: split 64 bits into ``max_distance + 1`` blocks; two hashes within ``max_distance``
    bits agree exactly on at least one block, so only hashes sharing a block are compared.
    """

    def __init__(self, max_distance: int) -> None:
        self.max_distance = max_distance
        n = min(64, max_distance + 1) if max_distance >= 0 else 1
        edges = np.linspace(0, 64, n + 1).round().astype(int)
        self._blocks = [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]
        self._tables: list[dict[int, list[int]]] = [{} for _ in self._blocks]
        self._values: list[int] = []
        self._ids: list[str] = []

    def _keys(self, v: int) -> Iterable[tuple[int, int]]:
        for i, (a, b) in enumerate(self._blocks):
            yield i, (v >> (64 - b)) & ((1 << (b - a)) - 1)

    def find(self, h: str) -> str | None:
        """Id of a kept hash within the distance, or None."""
        if self.max_distance < 0:
            return None
        v = int(h, 16)
        seen: set[int] = set()
        for i, key in self._keys(v):
            for j in self._tables[i].get(key, ()):
                if j not in seen:
                    seen.add(j)
                    if (self._values[j] ^ v).bit_count() <= self.max_distance:
                        return self._ids[j]
        return None

    def add(self, h: str, ident: str) -> str | None:
        """Add ``h`` unless it duplicates a kept hash; returns that hash's id when it does."""
        dup = self.find(h)
        if dup is not None:
            return dup
        v = int(h, 16)
        j = len(self._values)
        self._values.append(v)
        self._ids.append(ident)
        for i, key in self._keys(v):
            self._tables[i].setdefault(key, []).append(j)
        return None

"""Face alignment (pure): 5 landmarks -> similarity transform -> loose 64x64 crop.

The template is InsightFace's ArcFace 112x112 template (eyes, nose tip, mouth corners), shrunk about the
crop centre by ``face_scale`` and shifted down by ``shift_y`` (both in units of the crop side) so that the
crop keeps the forehead and the chin, as the attention recipe widened its crop for. With the defaults (0.72, 0.04) the
eyes sit at y = 0.51 and x = 0.36 / 0.64 of the crop.

The photo is warped at ``warp_size_px`` (256) with a least-squares similarity (Umeyama, via
``cv2.estimateAffinePartial2D`` with all points as inliers), then area-resized to ``output_size_px`` (64).
Pixels that fall outside the photo are filled as FFHQ does (reflect padding, then blended towards a
blurred copy with the distance from the photo edge), so they do not show as black wedges. An optional
circular feather mask (the attention recipe: radius 0.55 of the crop, outside blurred) is a switch.

Example::

    import numpy as np
    from curation.align import align_face, template_points
    rgb = np.zeros((480, 640, 3), np.uint8)
    lm = np.array([[280, 200], [360, 200], [320, 250], [290, 290], [350, 290]], np.float32)
    crop = align_face(rgb, lm)                   # (64, 64, 3) uint8
    print(template_points(64)[:2])               # where the eyes land in the crop
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["ARCFACE_112", "template_points", "similarity_from_points", "align_face", "estimate_transform"]

# InsightFace arcface_dst (insightface/utils/face_align.py), pixels of a 112x112 crop.
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    np.float32,
)


def template_points(size: int, *, face_scale: float = 0.72, shift_y: float = 0.04) -> np.ndarray:
    """(5, 2) float32 target landmark positions in a ``size`` x ``size`` crop."""
    # pixel-centre convention: pixel i covers [i - 0.5, i + 0.5], so a unit position u is pixel u * size - 0.5
    unit = (ARCFACE_112 + 0.5) / 112.0
    unit = (unit - 0.5) * face_scale + 0.5
    unit[:, 1] += shift_y
    return (unit * size - 0.5).astype(np.float32)


def similarity_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping ``src`` onto ``dst``: (2, 3)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    # Umeyama (1991) closed form, no reflection.
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    var = (s0**2).sum() / len(src)
    if var <= 1e-12:
        raise ValueError("landmarks are degenerate (all at one point)")
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1
    r = u @ np.diag(d) @ vt
    scale = (sig * d).sum() / var
    t = mu_d - scale * r @ mu_s
    return np.hstack([scale * r, t[:, None]]).astype(np.float32)


def estimate_transform(landmarks: np.ndarray, size: int, *, face_scale: float = 0.72, shift_y: float = 0.04):
    """(2, 3) matrix mapping photo pixels to a ``size`` crop."""
    return similarity_from_points(landmarks, template_points(size, face_scale=face_scale, shift_y=shift_y))


def _fill_outside(warped: np.ndarray, inside: np.ndarray, size: int) -> np.ndarray:
    """FFHQ-style: blend reflected padding towards a blurred copy as it gets further from the photo."""
    if inside.min() >= 254:
        return warped
    outside = (inside < 128).astype(np.uint8)
    dist = cv2.distanceTransform(outside, cv2.DIST_L2, 3)  # pixels from the photo edge, 0 inside
    blend = np.clip(dist / (0.1 * size), 0.0, 1.0)[..., None]
    blurred = cv2.GaussianBlur(warped, (0, 0), sigmaX=max(1.0, 0.02 * size))
    img = warped.astype(np.float32)
    img += (blurred.astype(np.float32) - img) * blend
    # FFHQ also fades towards the median colour so distant padding carries no structure
    median = np.median(warped[::4, ::4].reshape(-1, 3), axis=0)
    img += (median - img) * np.clip(blend * 0.5, 0.0, 1.0)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def _feather(img: np.ndarray, radius: float) -> np.ndarray:
    """Keep a disc of ``radius`` (fraction of the side) sharp; blur outside with a soft edge."""
    size = img.shape[0]
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    c = (size - 1) / 2
    r = np.sqrt((xx - c) ** 2 + (yy - c) ** 2)
    edge = 0.05 * size
    mask = np.clip((radius * size - r) / edge + 0.5, 0.0, 1.0)[..., None]
    blurred = cv2.GaussianBlur(img, (0, 0), sigmaX=0.04 * size).astype(np.float32)
    out = blurred + (img.astype(np.float32) - blurred) * mask
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _crop_to_region(rgb: np.ndarray, m: np.ndarray, size: int, margin: int) -> tuple[np.ndarray, np.ndarray]:
    """The part of the photo the ``size`` warp reads (including what its reflected border reads), and ``m`` for it.

    A big photo is then never resized or copied whole: only the face's neighbourhood is.
    """
    h, w = rgb.shape[:2]
    inv = cv2.invertAffineTransform(m)
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float32) @ inv[:, :2].T + inv[:, 2]
    (xa, ya), (xb, yb) = corners.min(0), corners.max(0)
    # reflection about the left edge reads as far right as the region sticks out on the left, and so on
    x0 = min(xa, w - 1 - (xb - (w - 1)))
    x1 = max(xb, -xa)
    y0 = min(ya, h - 1 - (yb - (h - 1)))
    y1 = max(yb, -ya)
    x0, y0 = max(0, int(np.floor(x0)) - margin), max(0, int(np.floor(y0)) - margin)
    x1, y1 = min(w, int(np.ceil(x1)) + margin + 1), min(h, int(np.ceil(y1)) + margin + 1)
    if x1 - x0 < 2 or y1 - y0 < 2 or (x0 == 0 and y0 == 0 and x1 == w and y1 == h):
        return rgb, m
    m2 = m.copy()
    m2[:, 2] += m[:, :2] @ np.array([x0, y0], np.float32)
    return rgb[y0:y1, x0:x1], m2


def align_face(
    rgb: np.ndarray,
    landmarks: np.ndarray,
    *,
    output_size_px: int = 64,
    warp_size_px: int = 256,
    face_scale: float = 0.72,
    shift_y: float = 0.04,
    feather: bool = False,
    feather_radius: float = 0.55,
) -> np.ndarray:
    """Aligned ``(output_size_px, output_size_px, 3)`` uint8 RGB crop of the face with these landmarks."""
    warp = max(warp_size_px, output_size_px)
    m = estimate_transform(landmarks, warp, face_scale=face_scale, shift_y=shift_y)
    scale = float(np.hypot(m[0, 0], m[0, 1]))
    src, m = _crop_to_region(rgb, m, warp, margin=int(np.ceil(2.0 / min(scale, 1.0))) + 1)
    if scale < 0.5:
        # shrinking by more than 2x: pre-shrink with area averaging so the bilinear warp does not alias
        f = scale * 2.0
        small = cv2.resize(
            src, (max(1, round(src.shape[1] * f)), max(1, round(src.shape[0] * f))), interpolation=cv2.INTER_AREA
        )
        fx, fy = small.shape[1] / src.shape[1], small.shape[0] / src.shape[0]
        src = small
        m = m @ np.array([[1 / fx, 0, 0], [0, 1 / fy, 0], [0, 0, 1]], np.float32)
    warped = cv2.warpAffine(src, m, (warp, warp), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    inside = cv2.warpAffine(
        np.full(src.shape[:2], 255, np.uint8),
        m,
        (warp, warp),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    warped = _fill_outside(warped, inside, warp)
    if feather:
        warped = _feather(warped, feather_radius)
    if warp != output_size_px:
        warped = cv2.resize(warped, (output_size_px, output_size_px), interpolation=cv2.INTER_AREA)
    return warped

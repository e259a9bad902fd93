"""Alignment on real photos: the detector, run again on the 64x64 output, finds the eyes level and on the template.

How the re-detection is done: the 64x64 crop is upscaled 4x (bicubic) to 256x256, RetinaFace runs on it, and
its landmarks are mapped back to 64x64 pixels with ``(p + 0.5) / 4 - 0.5`` (pixel-centre convention).
Only faces with |yaw| < 20 deg (frontal) are checked: for a profile the 5-point template does not apply.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from curation import filters as F
from curation.align import align_face, estimate_transform, similarity_from_points, template_points
from curation.detect import RetinaFaceDetector, refine_landmarks
from tests import _synth as synth

TOL_PX = 2.0


@pytest.fixture(scope="module")
def det():
    return RetinaFaceDetector()


def _eyes_after_alignment(det, crop: np.ndarray) -> np.ndarray:
    up = cv2.resize(crop, (256, 256), interpolation=cv2.INTER_CUBIC)
    found = det.detect(up)
    assert found, "no face found again in the aligned crop"
    return (found[0].landmarks[:2] + 0.5) / 4.0 - 0.5


def _check(det, photo: np.ndarray, near: np.ndarray | None = None) -> None:
    faces = det.detect(photo)
    assert faces
    face = faces[0] if near is None else min(faces, key=lambda f: np.hypot(*(f.landmarks[:3].mean(0) - near)))
    face = refine_landmarks(det, photo, face)
    crop = align_face(photo, face.landmarks)
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
    eyes = _eyes_after_alignment(det, crop)
    target = template_points(64)[:2]
    assert abs(eyes[0, 1] - eyes[1, 1]) < 1.5, f"eyes not level: {eyes}"  # 1.5 px over ~15 px: under 6 deg
    assert np.abs(eyes - target).max() < TOL_PX, f"eyes {eyes} vs template {target}"


@pytest.mark.parametrize("deg", [0, 15, -15, 30, -30])
def test_astronaut_rotated(det, deg):
    _check(det, synth.rotate(synth.astronaut(), deg))


@pytest.mark.parametrize("factor", [0.6, 0.4])
def test_astronaut_shrunk(det, factor):
    _check(det, synth.shrink(synth.astronaut(), factor))


def test_astronaut_blurred_and_darkened(det):
    a = synth.astronaut()
    lm = det.detect(a)[0].landmarks
    _check(det, synth.blur(a, 2.0))
    _check(det, synth.darken_eyes(a, lm, radius_frac=0.12, level=70))


@pytest.mark.slow
@pytest.mark.parametrize("deg", [0, 30, -30])
def test_t1_frontal_faces_rotated(det, deg):
    t1 = synth.t1()
    frontal = [f for f in det.detect(t1) if abs(F.estimate_yaw(f.landmarks)) < 20]
    assert len(frontal) >= 3
    for f in frontal:
        c = f.landmarks[:3].mean(0)
        _check(det, synth.rotate(t1, deg, (float(c[0]), float(c[1]))), near=c)


def test_similarity_recovers_known_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2)).astype(np.float32)
    th, s, t = np.deg2rad(23.0), 1.7, np.array([5.0, -3.0])
    r = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    dst = (s * src @ r.T + t).astype(np.float32)
    m = similarity_from_points(src, dst)
    assert np.allclose(m[:, :2], s * r, atol=1e-4) and np.allclose(m[:, 2], t, atol=1e-3)
    with pytest.raises(ValueError, match="degenerate"):
        similarity_from_points(np.zeros((5, 2)), dst)


def test_template_is_loose_and_level():
    tp = template_points(64)
    assert tp[0, 1] == pytest.approx(tp[1, 1], abs=0.2)
    assert tp[0, 0] < 32 < tp[1, 0]
    # loose crop: eyes below a third of the height (forehead), mouth well above the bottom (chin)
    assert tp[0, 1] > 64 / 3 and tp[3, 1] < 0.8 * 64
    assert abs((tp[0, 0] + tp[1, 0]) / 2 - 31.5) < 0.5  # centred


def test_transform_maps_landmarks_onto_template():
    lm = np.array([[280, 200], [360, 205], [322, 250], [292, 292], [350, 296]], np.float32)
    m = estimate_transform(lm, 256)
    mapped = lm @ m[:, :2].T + m[:, 2]
    assert np.abs(mapped[:2] - template_points(256)[:2]).max() < 6.0


def test_border_fill_has_no_black_wedges():
    """A face at the photo corner: the part of the crop outside the photo is reflected + blurred, not black."""
    a = synth.astronaut()
    corner = a[40:200, 160:300]  # the face, cut close: the loose crop reaches outside this photo
    lm_full = np.array([[204.0, 99.0], [249.6, 100.0], [225.0, 128.0], [203.0, 139.0], [247.0, 140.0]], np.float32)
    lm = lm_full - np.array([160, 40], np.float32)
    crop = align_face(corner, lm)
    m = estimate_transform(lm, 64)
    outside = cv2.warpAffine(np.ones(corner.shape[:2], np.uint8), m, (64, 64), borderValue=0) == 0
    naive = cv2.warpAffine(corner, m, (64, 64), borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    assert outside.mean() > 0.05  # the case is real: part of the crop lies outside the photo
    assert (naive[outside].max(axis=1) < 10).mean() > 0.95  # where a plain warp leaves black wedges
    assert (crop[outside].max(axis=1) < 10).mean() < 0.01  # ours has photo-coloured, blurred content
    assert crop[outside].mean() > 60


def test_feather_switch_blurs_outside_only():
    a = synth.astronaut()
    lm = np.array([[204.0, 99.0], [249.6, 100.0], [225.0, 128.0], [203.0, 139.0], [247.0, 140.0]], np.float32)
    plain = align_face(a, lm).astype(np.float32)
    feathered = align_face(a, lm, feather=True, feather_radius=0.55).astype(np.float32)
    yy, xx = np.mgrid[:64, :64]
    r = np.hypot(xx - 31.5, yy - 31.5)
    inner, outer = r < 0.4 * 64, r > 0.62 * 64
    diff = np.abs(plain - feathered).mean(axis=2)
    assert diff[inner].mean() < 0.5
    assert diff[outer].mean() > 2 * diff[inner].mean() + 1.0
    lap = lambda img: np.abs(cv2.Laplacian(img.mean(axis=2), cv2.CV_32F))[outer].mean()  # noqa: E731
    assert lap(feathered) < 0.7 * lap(plain)  # blurred outside the disc


def test_large_warp_then_area_resize_matches_direct_size():
    a = synth.astronaut()
    lm = np.array([[204.0, 99.0], [249.6, 100.0], [225.0, 128.0], [203.0, 139.0], [247.0, 140.0]], np.float32)
    big = align_face(a, lm, output_size_px=128, warp_size_px=256)
    small = align_face(a, lm, output_size_px=64, warp_size_px=256)
    down = cv2.resize(big, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32)
    assert np.abs(down - small.astype(np.float32)).mean() < 3.0  # same geometry at both sizes


def test_big_photo_crop_gives_the_same_face(monkeypatch):
    """Only the face's neighbourhood is resized and warped; the result equals warping the whole photo."""
    import curation.align as A

    big = cv2.resize(synth.astronaut(), (1800, 1800), interpolation=cv2.INTER_CUBIC)
    lm = np.array([[204.0, 99.0], [249.6, 100.0], [225.0, 128.0], [203.0, 139.0], [247.0, 140.0]], np.float32)
    lm = (lm + 0.5) * 1800 / 512 - 0.5  # near the top edge: the loose crop reaches outside the photo
    fast = align_face(big, lm)
    monkeypatch.setattr(A, "_crop_to_region", lambda rgb, m, size, margin: (rgb, m))
    whole = align_face(big, lm)
    assert np.abs(fast.astype(int) - whole.astype(int)).max() <= 2

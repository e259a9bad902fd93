"""Robust photo decoding (pure apart from PIL): bytes -> RGB uint8, or a reject reason.

Handles what PTT image hosts serve: EXIF orientation is applied; CMYK, palette, grey, grey+alpha and RGBA
are converted (alpha composited on white); 16-bit and 32-bit grey are scaled to 8 bits; an animated GIF or
APNG gives its first frame. Rejected with a reason, never raised: zero-byte, not an image, corrupt or
truncated (``unreadable``) and more than ``max_pixels`` pixels (``too_large``, checked from the header
before any pixel is decoded, so a decompression bomb costs nothing). Large JPEGs can be decoded at a
reduced scale (:func:`decode_photo_scaled`), which is several times faster.

Example::

    from curation.images import decode_photo
    rgb, reason, detail = decode_photo(open("t1.jpg", "rb").read())
    print(rgb.shape if rgb is not None else (reason, detail))   # (886, 1280, 3)
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps

__all__ = ["decode_photo", "decode_photo_scaled"]


def _to_rgb(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im).astype(np.float64)
        top = 65535.0 if mode.startswith("I;16") else max(255.0, float(a.max()) if a.size else 255.0)
        if mode == "F":
            top = 1.0 if a.size and float(a.max()) <= 1.0 else 255.0
        g = np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(im if mode == "RGB" else im.convert("RGB"))


def decode_photo(data: bytes, *, max_pixels: int = 40_000_000) -> tuple[np.ndarray | None, str | None, str]:
    """``(rgb, None, "")`` on success, else ``(None, reason, detail)`` with reason ``unreadable`` or ``too_large``."""
    rgb, reason, detail, _ = decode_photo_scaled(data, max_pixels=max_pixels)
    return rgb, reason, detail


def decode_photo_scaled(
    data: bytes, *, max_pixels: int = 40_000_000, draft_min_pixels: int | None = None
) -> tuple[np.ndarray | None, str | None, str, float]:
    """As :func:`decode_photo`, plus the scale of the returned pixels relative to the stored photo.

    With ``draft_min_pixels``, a JPEG of more than twice that many pixels is decoded at 1/2, 1/4 or 1/8 size by
    libjpeg's DCT scaling (much faster than decoding it whole), keeping at least ``draft_min_pixels`` pixels.
    """
    if not data:
        return None, "unreadable", "zero-byte file", 1.0
    scale = 1.0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            w, h = im.size
            if w * h > max_pixels:
                return None, "too_large", f"{w}x{h} = {w * h} pixels > max_image_pixels {max_pixels}", 1.0
            if getattr(im, "n_frames", 1) > 1:
                im.seek(0)  # animated GIF / APNG: first frame
            if draft_min_pixels and im.format == "JPEG" and w * h >= 2 * draft_min_pixels:
                k = 0
                while k < 3 and (w * h) / 4 ** (k + 1) >= draft_min_pixels:
                    k += 1
                im.draft(None, (-(-w // 2**k), -(-h // 2**k)))
                scale = im.size[0] / w
            im.load()
            try:
                if im.getexif().get(0x0112, 1) not in (0, 1):  # only copy the pixels when a turn is needed
                    im = ImageOps.exif_transpose(im)
            except (OSError, ValueError, SyntaxError, KeyError, TypeError):
                pass  # a broken EXIF block: keep the pixels as stored
            rgb = _to_rgb(im)
    except Image.UnidentifiedImageError:
        return None, "unreadable", "not an image PIL can identify (HTML page, unknown format or corrupt header)", 1.0
    except Image.DecompressionBombError as exc:  # PIL's own guard fires in open() past 2x its limit
        return None, "too_large", f"> max_image_pixels {max_pixels}: {exc}", 1.0
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # PIL's UnidentifiedImageError is an OSError
        return None, "unreadable", f"{type(exc).__name__}: {exc}", 1.0
    if rgb.ndim != 3 or rgb.shape[0] < 2 or rgb.shape[1] < 2:
        return None, "unreadable", f"degenerate image of shape {rgb.shape}", 1.0
    return np.ascontiguousarray(rgb), None, "", scale

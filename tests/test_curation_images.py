"""Robust decoding: every odd input is handled (right pixels) or rejected with a reason, never raised."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from curation.images import decode_photo
from tests import _synth as synth


@pytest.fixture(scope="module")
def astro():
    return synth.astronaut()


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG header claiming width x height pixels, in a few hundred bytes."""
    raw = _save(Image.new("L", (8, 8)), "PNG")
    assert raw[12:16] == b"IHDR"
    ihdr = struct.pack(">II", width, height) + raw[24:29]
    chunk = b"IHDR" + ihdr
    return raw[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + raw[33:]


def test_zero_byte_and_garbage():
    assert decode_photo(b"")[1:] == ("unreadable", "zero-byte file")
    rgb, reason, detail = decode_photo(b"<html>not an image</html>")
    assert rgb is None and reason == "unreadable" and detail


def test_truncated_jpeg(astro):
    data = synth.encode(astro, "JPEG", quality=90)
    rgb, reason, _ = decode_photo(data[: len(data) // 2])
    assert rgb is None and reason == "unreadable"


def test_decompression_bomb_rejected_before_decoding():
    data = bomb_png()
    assert len(data) < 1000
    rgb, reason, detail = decode_photo(data, max_pixels=40_000_000)
    assert rgb is None and reason == "too_large" and "max_image_pixels" in detail
    # under PIL's own guard, ours answers from the header alone
    rgb, reason, detail = decode_photo(bomb_png(12_000, 10_000), max_pixels=40_000_000)
    assert rgb is None and reason == "too_large" and "12000x10000" in detail


def test_animated_gif_gives_first_frame(astro):
    frames = [Image.fromarray(astro), Image.fromarray(255 - astro)]
    data = _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    rgb, reason, _ = decode_photo(data)
    assert reason is None and rgb.shape == (512, 512, 3)
    assert np.abs(rgb.astype(float) - astro).mean() < np.abs(rgb.astype(float) - (255 - astro)).mean()


def test_cmyk_jpeg(astro):
    data = _save(Image.fromarray(astro).convert("CMYK"), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    rgb, reason, _ = decode_photo(data)
    assert reason is None and rgb.shape == (512, 512, 3) and rgb.dtype == np.uint8
    assert np.abs(rgb.astype(float) - astro).mean() < 12


def test_grayscale(astro):
    grey = np.asarray(Image.fromarray(astro).convert("L"))
    rgb, reason, _ = decode_photo(_save(Image.fromarray(grey), "PNG"))
    assert reason is None and rgb.shape == (512, 512, 3)
    assert (rgb[..., 0] == grey).all() and (rgb[..., 2] == grey).all()


def test_16bit_grey_is_scaled_not_clipped(astro):
    grey = np.asarray(Image.fromarray(astro).convert("L")).astype(np.uint16) * 257  # full 16-bit range
    data = _save(Image.fromarray(grey), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    rgb, reason, _ = decode_photo(data)
    assert reason is None and rgb.dtype == np.uint8
    assert np.abs(rgb[..., 0].astype(int) - grey // 257).max() <= 1


def test_exif_orientation_applied(astro):
    wide = np.concatenate([astro, astro[:, :200]], axis=1)  # 512 x 712, so a wrong rotation changes the shape
    stored = np.rot90(wide, k=1)  # pixels stored rotated 90 deg counter-clockwise ...
    exif = Image.Exif()
    exif[0x0112] = 6  # ... and tagged "rotate 90 CW to display"
    data = _save(Image.fromarray(np.ascontiguousarray(stored)), "JPEG", quality=95, exif=exif.tobytes())
    rgb, reason, _ = decode_photo(data)
    assert reason is None and rgb.shape == wide.shape
    assert np.abs(rgb.astype(float) - wide).mean() < 6


def test_rgba_composited_on_white(astro):
    rgba = np.dstack([astro, np.full((512, 512), 255, np.uint8)])
    rgba[:100, :100, 3] = 0
    rgb, reason, _ = decode_photo(_save(Image.fromarray(rgba), "PNG"))
    assert reason is None and (rgb[:100, :100] == 255).all()
    assert np.abs(rgb[200:].astype(float) - astro[200:]).max() == 0


def test_large_jpeg_decoded_at_reduced_scale(astro):
    import cv2

    from curation.images import decode_photo_scaled

    big = cv2.resize(astro, (1200, 1000), interpolation=cv2.INTER_CUBIC)
    data = synth.encode(big, "JPEG", quality=92)
    rgb, reason, _, scale = decode_photo_scaled(data, draft_min_pixels=250_000)
    assert reason is None and scale == 0.5 and rgb.shape == (500, 600, 3)  # 1/4 would fall under 250k pixels
    ref = cv2.resize(big, (600, 500), interpolation=cv2.INTER_AREA)
    assert np.abs(rgb.astype(float) - ref).mean() < 6
    assert decode_photo_scaled(data)[3] == 1.0  # off by default
    assert decode_photo_scaled(synth.encode(big), draft_min_pixels=250_000)[3] == 1.0  # PNG: no DCT scaling

"""Unit tests of the review page generator (`curation.review`) on a synthetic curation output folder.

The folder is built like ptt-curate's output: real 64x64 PNG crops of scikit-image's astronaut photo under
`faces/`, a `faces.jsonl` with kept and rejected faces, a `curation_report.json`. Browser tests live in
`test_review_browser.py`. Run: `.venv/bin/pytest tests/test_review.py -q`
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from curation import review

REASONS = ["blur", "eyes_covered", "profile", "duplicate"]


def make_curation_out(
    out: Path, n: int = 24, *, seed: int = 0, reasons=REASONS, rejected_every: int = 4
) -> list[dict]:
    """Write a curation output folder with `n` faces (every `rejected_every`-th rejected) and return the records."""
    rng = np.random.default_rng(seed)
    photo = skdata.astronaut()  # (512, 512, 3) uint8
    (out / "faces").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        size = int(rng.integers(80, 260))
        y, x = (int(v) for v in rng.integers(0, 512 - size, 2))
        crop = cv2.resize(photo[y : y + size, x : x + size], (64, 64), interpolation=cv2.INTER_AREA)
        if i % 5 == 3:
            crop = cv2.GaussianBlur(crop, (0, 0), 2.0)
        png = io.BytesIO()
        Image.fromarray(crop).save(png, format="PNG")
        face_id = hashlib.sha1(png.getvalue() + str(i).encode()).hexdigest()[:16] + "-0"  # unique like ptt-curate's
        (out / "faces" / f"{face_id}.png").write_bytes(png.getvalue())
        gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
        rejected = i % rejected_every == rejected_every - 1
        yaw = float(rng.uniform(-45, 45))
        records.append(
            {
                "face_id": face_id,
                "status": "rejected" if rejected else "kept",
                "reason": reasons[(i // rejected_every) % len(reasons)] if rejected else None,
                "split": None if rejected else ("test" if i % 7 == 0 else "train"),
                "face_score": float(rng.uniform(0.5, 1.0)),
                "blur_var": float(cv2.Laplacian(gray, cv2.CV_64F).var()),
                "eye_distance": float(rng.uniform(10, 60)),
                "eye_brightness": float(rng.uniform(30, 200)),
                "yaw": yaw,
                "pose": "frontal" if abs(yaw) < 20 else ("left" if yaw < 0 else "right"),
                "gender": ["female", "male", "unknown"][i % 3],
                "phash": f"{int(rng.integers(0, 2**63)):016x}",
                "article_id": f"M.{1700000000 + i}.A.{i:03X}",
                "image_url": f"https://i.imgur.com/img{i}.jpg",
            }
        )
    with (out / "faces.jsonl").open("w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec) + "\n")
    report = {"counts": {"in": n, "kept": sum(r["status"] == "kept" for r in records)}, "thresholds": {"blur": 50.0}}
    (out / "curation_report.json").write_text(json.dumps(report), encoding="utf-8")
    return records


def page_data(page: Path) -> dict:
    text = page.read_text(encoding="utf-8")
    m = re.search(r'<script id="review-data" type="application/json">(.*?)</script>', text, re.S)
    assert m, "data block missing"
    return json.loads(m.group(1))


def sheet_images(page: Path, data: dict) -> list[np.ndarray]:
    out = []
    for src in data["sheets"]["srcs"]:
        if src.startswith("data:image/png;base64,"):
            raw = base64.b64decode(src.split(",", 1)[1])
        else:
            raw = (page.parent / src).read_bytes()
        out.append(np.asarray(Image.open(io.BytesIO(raw)).convert("RGB")))
    return out


def thumb_of(sheets: list[np.ndarray], data: dict, k: int) -> np.ndarray:
    side, px, pad = data["sheets"]["side"], data["sheets"]["thumb_px"], data["sheets"]["pad_px"]
    sheet, j = sheets[k // (side * side)], k % (side * side)
    r, c = divmod(j, side)
    y, x = r * (px + 2 * pad) + pad, c * (px + 2 * pad) + pad
    return sheet[y : y + px, x : x + px]


@pytest.mark.parametrize("mode", ["embed", "files"])
def test_page_holds_every_face_with_its_own_pixels(tmp_path, mode):
    out = tmp_path / "out"
    records = make_curation_out(out, n=23)
    page = review.write_review_page(out, sprites=mode, sheet_side=3)  # 9 faces per sheet -> 3 sheets
    assert page == (out / "review.html").resolve()
    data = page_data(page)
    ids = [row[0] for row in data["rows"]]
    assert ids == [r["face_id"] for r in records]
    assert len(data["sheets"]["srcs"]) == 3
    assert all(s.startswith("data:") for s in data["sheets"]["srcs"]) == (mode == "embed")
    assert (out / "review_sprites").is_dir() == (mode == "files")
    sheets = sheet_images(page, data)
    assert sheets[0].shape == (3 * 66, 3 * 66, 3)  # 64 px faces in a 1 px edge-replicated frame
    assert sheets[2].shape == (2 * 66, 3 * 66, 3)  # last sheet: 5 faces, only as tall as needed
    for k, rec in enumerate(records):
        want = np.asarray(Image.open(out / "faces" / f"{rec['face_id']}.png").convert("RGB"))
        np.testing.assert_array_equal(thumb_of(sheets, data, k), want)
    cols = data["columns"]
    row = dict(zip(cols, data["rows"][3], strict=True))
    assert row["status"] == "rejected" and row["reason"] == "blur"
    assert row["blur_var"] == pytest.approx(records[3]["blur_var"], abs=1e-3)
    assert data["initial_rejected"] == []
    assert data["report"]["thresholds"]["blur"] == 50.0


def test_auto_mode_embeds_small_sets(tmp_path):
    out = tmp_path / "out"
    make_curation_out(out, n=5)
    data = page_data(review.write_review_page(out))
    assert data["sheets"]["srcs"][0].startswith("data:image/png;base64,")


def test_existing_review_file_and_review_rejects_are_embedded(tmp_path):
    out = tmp_path / "out"
    records = make_curation_out(out, n=12)
    records[1].update(status="rejected", reason="review", split=None)
    with (out / "faces.jsonl").open("w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec) + "\n")
    review.write_review_file(out / "review.json", [records[0]["face_id"], records[5]["face_id"], "gone-0"])
    data = page_data(review.write_review_page(out))
    want = sorted([records[0]["face_id"], records[1]["face_id"], records[5]["face_id"], "gone-0"])
    assert data["initial_rejected"] == want
    # A different embedded decision set gets a different localStorage key, so old browser state does not mask it.
    review.write_review_file(out / "review.json", [records[0]["face_id"]])
    assert page_data(review.write_review_page(out))["page_id"] != data["page_id"]


def test_review_file_round_trip_and_errors(tmp_path):
    path = review.write_review_file(tmp_path / "r.json", ["b-0", "a-0", "b-0"])
    assert json.loads(path.read_text()) == {"version": 1, "rejected": ["a-0", "b-0"]}
    assert review.read_review_file(path) == ["a-0", "b-0"]
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 2, "rejected": []}')
    with pytest.raises(review.ReviewError, match="bad.json"):
        review.read_review_file(bad)
    bad.write_text("{not json")
    with pytest.raises(review.ReviewError, match="not valid JSON"):
        review.read_review_file(bad)
    bad.write_text('{"version": 1, "rejected": [3]}')
    with pytest.raises(review.ReviewError, match="face id strings"):
        review.read_review_file(bad)


def test_bad_inputs_name_the_file(tmp_path):
    with pytest.raises(review.ReviewError, match="faces.jsonl: not found; run `ptt-curate"):
        review.write_review_page(tmp_path)
    out = tmp_path / "out"
    make_curation_out(out, n=3)
    with (out / "faces.jsonl").open("a") as fh:
        fh.write("{oops\n")
    with pytest.raises(review.ReviewError, match=r"faces.jsonl:4: not valid JSON"):
        review.write_review_page(out)


def test_missing_png_is_a_grey_cell_not_a_crash(tmp_path):
    out = tmp_path / "out"
    records = make_curation_out(out, n=4)
    (out / "faces" / f"{records[2]['face_id']}.png").unlink()
    page = review.write_review_page(out, sprites="files")
    data = page_data(page)
    assert data["missing"] == [records[2]["face_id"]]
    grey = thumb_of(sheet_images(page, data), data, 2)
    assert (grey == 128).all()


def test_script_breakout_is_escaped(tmp_path):
    out = tmp_path / "out"
    records = make_curation_out(out, n=2)
    records[0]["image_url"] = "https://x/</script><script>alert(1)</script>"
    records[0]["pose"] = "<b>&"
    (out / "faces.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    page = review.write_review_page(out)
    text = page.read_text()
    assert "alert(1)</script>" not in text
    data = page_data(page)  # the data block still parses and holds the exact strings
    assert data["rows"][0][data["columns"].index("image_url")] == records[0]["image_url"]
    assert data["rows"][0][data["columns"].index("pose")] == "<b>&"


def test_rewrite_replaces_stale_sprite_files(tmp_path):
    out = tmp_path / "out"
    make_curation_out(out, n=6)
    page = review.write_review_page(out, sprites="files", sheet_side=2)
    first = sorted(p.name for p in (out / "review_sprites").iterdir())
    assert len(first) == 2
    make_curation_out(out, n=6, seed=1)  # new faces, new sheets
    review.write_review_page(out, sprites="files", sheet_side=2)
    second = sorted(p.name for p in (out / "review_sprites").iterdir())
    assert len(second) == 2 and not set(first) & set(second)
    review.write_review_page(out, sprites="embed")
    assert not (out / "review_sprites").exists()
    assert page.is_file() and not list(out.glob(".review*"))  # no temp leftovers
    assert page.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


def test_main_review_prints_the_page_path(tmp_path, capsys):
    out = tmp_path / "out"
    make_curation_out(out, n=3)
    custom = tmp_path / "pages" / "mine #1.html"  # URL-special characters in the sprite folder's name
    assert review.main_review([str(out), "--out", str(custom), "--sprites", "files"]) == 0
    assert capsys.readouterr().out.strip() == str(custom.resolve())
    assert custom.is_file() and (tmp_path / "pages" / "mine #1_sprites").is_dir()
    assert review.main_review([str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ptt-curate review: error: ") and "nowhere: not a folder" in err


def test_dataset_folder_resolves_to_its_curation_output(tmp_path):
    out = tmp_path / "out"
    make_curation_out(out, n=3)
    (out / "dataset").mkdir()
    (out / "dataset" / "dataset_dict.json").write_text('{"splits": ["train", "test"]}')
    assert review.write_review_page(out / "dataset") == (out / "review.html").resolve()


def test_sprite_frame_repeats_the_edge_pixels(tmp_path):
    out = tmp_path / "out"
    make_curation_out(out, n=4)
    page = review.write_review_page(out, sprites="embed", sheet_side=2)
    data = page_data(page)
    sheet = sheet_images(page, data)[0]
    face = thumb_of([sheet], data, 3)  # bottom-right cell: frame at rows/cols 66 and 131
    np.testing.assert_array_equal(sheet[66, 67:131], face[0])
    np.testing.assert_array_equal(sheet[67:131, 131], face[:, -1])


def test_empty_output_gives_an_empty_page(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "faces.jsonl").write_text("")
    data = page_data(review.write_review_page(out))
    assert data["rows"] == [] and data["sheets"]["srcs"] == []


def test_open_flag_opens_the_page(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    make_curation_out(out, n=2)
    opened = []
    monkeypatch.setattr(review.webbrowser, "open", lambda url: opened.append(url) or True)
    assert review.main_review([str(out), "--open"]) == 0
    assert opened == [(out / "review.html").resolve().as_uri()]

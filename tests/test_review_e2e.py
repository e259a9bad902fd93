"""End to end: curate real photos, review them in headless Chromium, rerun curation with the exported review file.

Photos that ship offline (InsightFace's t1.jpg group photo and Tom_Hanks_54745.png, scikit-image's astronaut) go
through `ptt-curate` (real RetinaFace ONNX), `ptt-curate review` writes the page, three faces are rejected in the
browser (by click and by key), the exported file is saved as OUT/review.json, and the rerun must drop exactly those
three from the dataset, from the cache (no detection re-run). Skips, with the reason, without `curation.cli`,
Playwright or Chromium. Run: `.venv/bin/pytest tests/test_review_e2e.py -q`
"""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path

import pytest
from PIL import Image
from test_review_browser import Page, browser  # noqa: F401  (the module-scoped Chromium fixture)

from curation import review

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _curation_cli():
    if importlib.util.find_spec("curation.cli") is None:
        pytest.skip("curation.cli (the ptt-curate CLI) is not in this checkout yet")
    from curation import cli

    return cli


def _write_input(root: Path) -> tuple[Path, Path]:
    import insightface
    from skimage import data as skdata

    src = Path(insightface.__file__).parent / "data" / "images"
    buf = io.BytesIO()
    Image.fromarray(skdata.astronaut()).save(buf, "JPEG", quality=92)
    photos = {
        "t1.jpg": (src / "t1.jpg").read_bytes(),  # group photo: six faces
        "hanks.png": (src / "Tom_Hanks_54745.png").read_bytes(),
        "astronaut.jpg": buf.getvalue(),
    }
    store = root / "images"
    (store / "full").mkdir(parents=True)
    lines = []
    for i, (name, data) in enumerate(photos.items()):
        (store / "full" / name).write_bytes(data)
        rec = {
            "article_id": f"M.{1700000000 + i}.A.{i:03X}",
            "published_at": f"2023-11-1{i}T12:00:00+08:00",
            "image_urls": [f"https://i.imgur.com/{name}"],
            "images": [
                {"url": f"https://i.imgur.com/{name}", "path": f"full/{name}", "checksum": "", "status": "downloaded"}
            ],
        }
        lines.append(json.dumps(rec) + "\n")
    feed = root / "feed.jsonl"
    feed.write_text("".join(lines), encoding="utf-8")
    return feed, store


def _faces(out: Path) -> dict[str, dict]:
    with (out / "faces.jsonl").open(encoding="utf-8") as fh:
        return {r["face_id"]: r for r in map(json.loads, fh)}


def _dataset_ids(out: Path) -> set[str]:
    from datasets import load_from_disk

    dd = load_from_disk(str(out / "dataset"))
    return {fid for split in dd.values() for fid in split["face_id"]}


def test_review_then_rerun_drops_exactly_the_rejected_faces(browser, tmp_path, capsys):  # noqa: F811
    cli = _curation_cli()
    feed, store = _write_input(tmp_path)
    out = tmp_path / "out"
    # Every face of the group photo kept (they are small in it), so the review has faces to choose from.
    args = [f"feed={feed}", f"images={store}", f"out={out}", "detector.max_faces_per_photo=8",
            "filters.min_face_area_ratio=0.001", "-q"]  # fmt: skip
    assert cli.main(args) == 0
    kept_before = _dataset_ids(out)
    assert len(kept_before) >= 5, f"need >= 5 kept faces to review, got {len(kept_before)}"
    assert kept_before == {fid for fid, r in _faces(out).items() if r["status"] == "kept"}

    capsys.readouterr()
    assert cli.main(["review", str(out)]) == 0
    page_path = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert page_path == (out / "review.html").resolve()

    pg = Page(browser, page_path.as_uri())
    page = pg.page
    first = page.get_attribute('.cell[data-p="1"]', "data-face-id")
    page.click('.cell[data-p="1"]')
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    second = pg.focused_id()
    page.keyboard.press("x")
    page.keyboard.press("End")
    third = pg.focused_id()
    page.keyboard.press("Space")
    picked = {first, second, third}
    assert len(picked) == 3 and picked <= kept_before
    exported = pg.export(out / "review.json")
    assert exported == {"version": 1, "rejected": sorted(picked)}
    assert pg.errors == []
    pg.context.close()

    assert cli.main(args) == 0
    report = json.loads((out / "curation_report.json").read_text(encoding="utf-8"))
    assert report["photos"]["detected_now"] == 0  # decisions applied from the cache, no detection re-run
    assert _dataset_ids(out) == kept_before - picked
    faces = _faces(out)
    assert {fid for fid, r in faces.items() if r["reason"] == "review"} == picked

    # The regenerated page opens with those decisions.
    page_path = review.write_review_page(out)
    pg = Page(browser, page_path.as_uri())
    pg.page.select_option("#show", "all")
    assert pg.rejected_in_dom() == picked
    pg.context.close()

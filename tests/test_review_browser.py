"""Browser tests of the review page: Debian's Chromium (headless) driven by Playwright for Python.

They skip with the reason when the `playwright` Python package or Chromium is missing (`bash
scripts/install_browser.sh` installs Chromium; Playwright's own browser download is never used). Set
`PTT_CHROMIUM=/path/to/chromium` to use another binary. Run: `.venv/bin/pytest tests/test_review_browser.py -q`
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from test_review import make_curation_out

from curation import review

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    env = os.environ.get("PTT_CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    return shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: `.venv/bin/pip install playwright` (Python package only)")
    exe = chromium_path()
    if exe is None and os.environ.get("PTT_CHROMIUM"):
        pytest.skip(f"PTT_CHROMIUM={os.environ['PTT_CHROMIUM']} is not a file; point it at a Chromium binary")
    if exe is None:
        pytest.skip(
            "Chromium not found (looked for `chromium` on PATH and /usr/bin/chromium): "
            "run `bash scripts/install_browser.sh` or set PTT_CHROMIUM"
        )
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Page:
    """A loaded review page plus the JS errors it raised (a test fails on any)."""

    def __init__(self, browser, url: str, *, context=None):
        self.context = context or browser.new_context(accept_downloads=True, viewport={"width": 1000, "height": 700})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(url)
        self.page.wait_for_selector(".cell")

    def focused_id(self) -> str:
        return self.page.get_attribute(".cell.focus", "data-face-id")

    def rejected_in_dom(self) -> set[str]:
        return set(self.page.eval_on_selector_all(".cell.rej", "els => els.map(e => e.dataset.faceId)"))

    def export(self, dest: Path) -> dict:
        with self.page.expect_download() as info:
            self.page.click("#export")
        download = info.value
        assert download.suggested_filename == "review.json"
        download.save_as(dest)
        return json.loads(dest.read_text(encoding="utf-8"))


def test_reject_three_by_click_and_key_then_export(browser, tmp_path):
    out = tmp_path / "out"
    make_curation_out(out, n=30)
    pg = Page(browser, review.write_review_page(out).as_uri())
    page = pg.page

    first = page.get_attribute('.cell[data-p="0"]', "data-face-id")
    page.click('.cell[data-p="0"]')  # by click
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    second = pg.focused_id()
    page.keyboard.press("x")  # by key x
    page.keyboard.press("ArrowDown")
    third = pg.focused_id()
    page.keyboard.press("Space")  # by key space
    picked = {first, second, third}
    assert len(picked) == 3 and None not in picked
    assert pg.rejected_in_dom() == picked  # visibly marked
    assert "3" in page.inner_text("#export")

    got = pg.export(tmp_path / "review.json")
    assert got == {"version": 1, "rejected": sorted(picked)}
    assert review.read_review_file(tmp_path / "review.json") == sorted(picked)  # the CLI's reader accepts it

    page.keyboard.press("x")  # toggling again un-rejects the focused face
    assert pg.export(tmp_path / "review2.json")["rejected"] == sorted({first, second})
    assert pg.errors == []
    pg.context.close()


def test_decisions_survive_reload_and_import_replaces_them(browser, tmp_path):
    out = tmp_path / "out"
    records = make_curation_out(out, n=20)
    pg = Page(browser, review.write_review_page(out).as_uri())
    page = pg.page
    page.click('.cell[data-p="1"]')
    page.click('.cell[data-p="3"]')
    before = pg.rejected_in_dom()
    assert len(before) == 2
    page.reload()
    page.wait_for_selector(".cell")
    assert pg.rejected_in_dom() == before  # localStorage kept them
    assert "restored" in page.inner_text("#msg")

    imported = tmp_path / "earlier.json"
    kept_ids = [r["face_id"] for r in records if r["status"] == "kept"]
    review.write_review_file(imported, kept_ids[5:9])
    page.set_input_files("#import", str(imported))
    page.wait_for_function("document.querySelector('#msg').textContent.includes('imported')")
    assert pg.rejected_in_dom() == set(kept_ids[5:9])
    assert pg.export(tmp_path / "out.json")["rejected"] == sorted(kept_ids[5:9])

    bad = tmp_path / "bad.json"
    bad.write_text('{"rejected": "nope"}')
    page.set_input_files("#import", str(bad))
    page.wait_for_function("document.querySelector('#msg').textContent.includes('not a review file')")
    assert pg.rejected_in_dom() == set(kept_ids[5:9])  # a bad file changes nothing
    assert pg.errors == []
    pg.context.close()


def test_page_opens_with_existing_review_file(browser, tmp_path):
    out = tmp_path / "out"
    records = make_curation_out(out, n=16)
    earlier = [records[0]["face_id"], records[2]["face_id"]]
    review.write_review_file(out / "review.json", earlier)
    pg = Page(browser, review.write_review_page(out).as_uri())
    assert pg.rejected_in_dom() == set(earlier)
    assert pg.export(tmp_path / "again.json")["rejected"] == sorted(earlier)
    assert pg.errors == []
    pg.context.close()


def test_grouping_and_sorting(browser, tmp_path):
    out = tmp_path / "out"
    records = make_curation_out(out, n=40)
    by_id = {r["face_id"]: r for r in records}
    pg = Page(browser, review.write_review_page(out).as_uri())
    page = pg.page
    page.set_viewport_size({"width": 1000, "height": 1400})  # all groups in view: only rows near it are rendered
    page.select_option("#zoom", "64")
    page.select_option("#show", "all")
    page.select_option("#group", "reason")
    headers = page.eval_on_selector_all(".hdr", "els => els.map(e => e.textContent)")
    assert headers[0].startswith("kept (")
    assert {h.split(" (")[0] for h in headers[1:]} == {
        f"rejected: {r}" for r in {x["reason"] for x in records} - {None}
    }
    page.select_option("#group", "none")
    page.select_option("#sort", "face_score")
    page.click("#dir")  # descending
    order = page.evaluate("window.pttReview.order()")
    assert len(order) == 40
    scores = [by_id[f]["face_score"] for f in order]
    assert scores == sorted(scores, reverse=True)
    page.select_option("#show", "filtered")
    assert set(page.evaluate("window.pttReview.order()")) == {
        r["face_id"] for r in records if r["status"] == "rejected"
    }
    assert pg.errors == []
    pg.context.close()


@pytest.mark.slow
def test_large_set_is_virtualised(browser, tmp_path):
    out = tmp_path / "out"
    n = 3000
    make_curation_out(out, n=n, rejected_every=1000)
    page_path = review.write_review_page(out, sprites="files")
    assert len(list((out / "review_sprites").iterdir())) == 3  # 1024 faces a sheet
    pg = Page(browser, page_path.as_uri())
    page = pg.page
    shown = len(page.evaluate("window.pttReview.order()"))
    assert shown == n - n // 1000
    in_dom = page.eval_on_selector_all(".cell", "els => els.length")
    assert 0 < in_dom < 400  # only the rows near the viewport exist
    page.keyboard.press("End")
    page.keyboard.press("x")
    last = page.evaluate("window.pttReview.order()")[-1]
    assert pg.rejected_in_dom() == {last}
    assert page.eval_on_selector_all(".cell", "els => els.length") < 400
    assert pg.errors == []
    pg.context.close()


@pytest.mark.parametrize("mode", ["embed", "files"])
def test_sprite_sheets_load_in_the_browser(browser, tmp_path, mode):
    out = tmp_path / "out"
    make_curation_out(out, n=10)
    page_path = review.write_review_page(out, tmp_path / "pages" / "review #1.html", sprites=mode, sheet_side=3)
    pg = Page(browser, page_path.as_uri())
    widths = pg.page.evaluate(
        """() => Promise.all(JSON.parse(document.getElementById('review-data').textContent).sheets.srcs.map(
             src => new Promise(done => { const im = new Image(); im.onload = () => done(im.naturalWidth);
                                          im.onerror = () => done(-1); im.src = src; })))"""
    )
    assert widths == [3 * 66, 66]  # 10 faces, 9 a sheet: a full sheet and a 1-face one; both decode
    assert pg.errors == []
    pg.context.close()


def test_resizing_the_window_reflows_the_grid(browser, tmp_path):
    out = tmp_path / "out"
    make_curation_out(out, n=30)
    pg = Page(browser, review.write_review_page(out).as_uri())
    page = pg.page
    columns = "() => new Set([...document.querySelectorAll('.cell')].map(e => e.style.left)).size"
    wide = page.evaluate(columns)
    page.set_viewport_size({"width": 450, "height": 700})
    page.wait_for_function(f"({columns})() < {wide}")
    narrow = page.evaluate(columns)
    assert 1 <= narrow < wide
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowDown")  # one row down = one row's worth of faces further in the display order
    assert page.evaluate("window.pttReview.focus()") == narrow
    assert pg.errors == []
    pg.context.close()

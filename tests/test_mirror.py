"""The offline mirror: PTT's markup, the over18 gate, images, fault injection, the CLI."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from scrapy_ptt.mirror import Faults, build_images, generate_board, load_board, serve_mirror
from scrapy_ptt.parsing import is_not_found, is_over18_gate, parse_article, parse_index

REPO = Path(__file__).resolve().parents[1]


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def fetch(url: str, cookie: str | None = "over18=1", data: bytes | None = None, follow=True):
    handlers = [] if follow else [NoRedirect()]
    req = urllib.request.Request(url, data=data, headers={"Cookie": cookie} if cookie else {})
    try:
        with urllib.request.build_opener(*handlers).open(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read(), r.url
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read(), url


def test_gate_redirects_without_cookie_and_form_sets_it():
    with serve_mirror() as base:
        status, headers, _, _ = fetch(f"{base}/bbs/Beauty/index.html", cookie=None, follow=False)
        assert status == 302 and headers["Location"] == "/ask/over18?from=%2Fbbs%2FBeauty%2Findex.html"
        status, _, body, url = fetch(f"{base}/bbs/Beauty/index.html", cookie=None)
        assert status == 200 and "/ask/over18" in url and is_over18_gate(body.decode())
        status, headers, _, _ = fetch(f"{base}/ask/over18", None, b"from=%2Fbbs%2FBeauty%2Findex2.html&yes=yes", False)
        assert status == 302 and headers["Location"] == "/bbs/Beauty/index2.html"
        assert headers["Set-Cookie"].startswith("over18=1")
        status, _, body, _ = fetch(f"{base}/bbs/Beauty/index2.html")
        assert status == 200 and not is_over18_gate(body.decode())


def test_index_pages_page_like_ptt():
    board = load_board()
    with serve_mirror() as base:
        pages = {}
        for n in range(1, board.pages + 1):
            status, _, body, _ = fetch(f"{base}/bbs/Beauty/index{n}.html")
            assert status == 200
            pages[n] = parse_index(body.decode(), base)
        newest = parse_index(fetch(f"{base}/bbs/Beauty/index.html")[2].decode(), base)
        assert fetch(f"{base}/bbs/Beauty/index{board.pages + 1}.html")[0] == 404
    assert board.pages >= 5
    assert pages[1].prev_url is None and pages[1].next_url.endswith("/index2.html")
    assert newest.next_url is None and newest.prev_url.endswith(f"/index{board.pages - 1}.html")
    assert [r.title for r in newest.rows] == [r.title for r in pages[board.pages].rows]
    assert sum(r.pinned for r in newest.rows) == 3 and all("[公告]" in r.title for r in newest.rows if r.pinned)
    assert sum(r.deleted for p in pages.values() for r in p.rows) == 2
    stamps = [t for n in sorted(pages) for t in pages[n].timestamps()]
    assert stamps == sorted(stamps)  # oldest first, like PTT
    jan = [n for n, p in pages.items() if any(1704038400 <= t < 1706716800 for t in p.timestamps())]
    assert len(jan) >= 3


def test_articles_404_and_images():
    board = load_board()
    images = build_images()
    with serve_mirror() as base:
        gone = next(p for p in board.posts if p.get("gone"))
        status, _, body, _ = fetch(f"{base}/bbs/Beauty/M.{gone['ts']}.A.{gone['hex']}.html")
        assert status == 404 and is_not_found(body.decode())
        post = next(p for p in board.posts if p["title"] == "[正妹] 推文有圖")
        art = parse_article(fetch(f"{base}/bbs/Beauty/M.{post['ts']}.A.{post['hex']}.html")[2].decode(), base)
        assert art.title == "[正妹] 推文有圖" and art.author == "pusher (推文)" and art.board == "Beauty"
        assert art.pushes == {"push": 2, "boo": 1, "neutral": 1}
        status, headers, data, _ = fetch(f"{base}/img/t1.jpg", cookie=None)
        assert status == 200 and headers["Content-Type"] == "image/jpeg" and data == images["t1.jpg"]
        status, _, data, url = fetch(f"{base}/imgur/Ab3dE5f.jpg", cookie=None)
        assert status == 200 and data == images["t1_face1.jpg"]
        status, _, _, url = fetch(f"{base}/imgur/Gon3Zzz.jpg", cookie=None)
        assert url.endswith("/imgur/removed.png")
        assert fetch(f"{base}/img/empty.jpg", cookie=None)[2] == b""
        assert b"Disallow" in fetch(f"{base}/robots.txt", cookie=None)[2]


def test_images_are_real_photos_and_small_on_disk():
    from PIL import Image

    images = build_images()
    decodable = 0
    for name, data in images.items():
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                decodable += 1
        except OSError:
            assert name in ("corrupt.jpg", "empty.jpg")
    assert decodable == len(images) - 2
    site = REPO / "scrapy_ptt" / "mirror_site"
    assert sum(f.stat().st_size for f in site.rglob("*") if f.is_file()) < 1_000_000


@pytest.mark.slow
def test_mirror_photos_have_enough_faces():
    """The demo needs roughly 15-30 face photos: count them with the project's own detector."""
    import numpy as np
    from PIL import Image

    detect = pytest.importorskip("curation.detect")
    detector = detect.RetinaFaceDetector()
    linked = {n for p in load_board().posts for n in _linked_images(p)}
    with_face = 0
    for name in sorted(linked):
        data = build_images().get(name)
        try:
            rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        except OSError:
            continue
        with_face += bool(detector.detect(rgb))
    assert 15 <= with_face <= 30, with_face


def _linked_images(post: dict) -> list[str]:
    import re

    text = post.get("body", "") + " ".join(c for _, _, c in post.get("pushes", []))
    names = re.findall(r"\{(?:img|junk):([^}?]+)", text)
    imgur = load_board().imgur
    names += [imgur[i] for i in re.findall(r"\{m?imgur:([^}]+)\}", text) if imgur.get(i) not in (None, "removed")]
    return names


def test_fault_injection_fires_once():
    faults = Faults(error_500_once={"/img/t1.jpg"}, error_429_once={"/img/cat.jpg"}, slow_s={"/robots.txt": 0.3})
    with serve_mirror(faults=faults) as base:
        assert fetch(f"{base}/img/t1.jpg")[0] == 500
        assert fetch(f"{base}/img/t1.jpg")[0] == 200
        status, headers, _, _ = fetch(f"{base}/img/cat.jpg")
        assert status == 429 and headers["Retry-After"] == "1"
        assert fetch(f"{base}/img/cat.jpg")[0] == 200
        t0 = time.monotonic()
        fetch(f"{base}/robots.txt")
        assert time.monotonic() - t0 >= 0.3
    assert faults.hits["/img/t1.jpg"] == 2


def test_only_loopback():
    with pytest.raises(ValueError, match="loopback"):
        with serve_mirror(host="0.0.0.0"):
            pass


def test_generated_board_for_benchmarks():
    board = generate_board(205)
    assert board.pages == 11 and len(board.page_rows(11)) == 5
    with serve_mirror(board=board) as base:
        page = parse_index(fetch(f"{base}/bbs/Beauty/index.html")[2].decode(), base)
        assert page.prev_url.endswith("/index10.html") and len(page.rows) == 5


def test_cli_writes_url_file_and_serves(tmp_path):
    url_file = tmp_path / "mirror.url"
    proc = subprocess.Popen(
        [sys.executable, "-m", "scrapy_ptt.mirror", "--port", "0", "--url-file", str(url_file)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not url_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        base = url_file.read_text().strip()
        assert base.startswith("http://127.0.0.1:")
        assert fetch(f"{base}/bbs/Beauty/index1.html")[0] == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)

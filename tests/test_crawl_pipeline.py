"""Image checks and the private-host guard, as pure functions (the whole pipeline runs in test_crawl.py)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from scrapy_ptt.items import FEED_FIELDS, PostItem
from scrapy_ptt.netguard import blocked_reason_for_ip, resolve_block_reason, url_literal_block_reason
from scrapy_ptt.pipelines import image_reject_reason


def _png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (10, 20, 30)).save(buf, "PNG")
    return buf.getvalue()


def test_image_checks():
    ok = _png(32, 24)
    kw = {"max_bytes": 10_000_000, "max_pixels": 1_000_000}
    assert image_reject_reason(ok, "image/png", **kw) is None
    assert image_reject_reason(ok, "", **kw) is None  # no header: judged by the bytes
    assert image_reject_reason(b"", "image/png", **kw) == "empty"
    assert image_reject_reason(ok, "text/html; charset=utf-8", **kw) == "content_type"
    assert image_reject_reason(ok, "image/png", max_bytes=10, max_pixels=10**6) == "too_large"
    assert image_reject_reason(ok[:60], "image/png", **kw) == "decode_error"
    assert image_reject_reason(b"<html>nope</html>", "image/jpeg", **kw) == "decode_error"
    # A 4000x4000 PNG of one colour is a few KB on the wire but 16 M pixels: refused before decoding.
    bomb = _png(4000, 4000)
    assert len(bomb) < 200_000
    assert image_reject_reason(bomb, "image/png", max_bytes=10**7, max_pixels=1_000_000) == "decompression_bomb"
    bmp = io.BytesIO()
    Image.new("RGB", (8, 8)).save(bmp, "BMP")
    assert image_reject_reason(bmp.getvalue(), "image/bmp", **kw) == "format"


@pytest.mark.parametrize(
    "url,reason",
    [
        ("http://127.0.0.1:8000/a.jpg", "private_host"),
        ("http://localhost/a.jpg", "private_host"),
        ("http://foo.localhost/a.jpg", "private_host"),
        ("http://10.1.2.3/a.jpg", "private_host"),
        ("http://192.168.0.1/a.jpg", "private_host"),
        ("http://169.254.169.254/latest/meta-data.jpg", "private_host"),
        ("http://224.0.0.1/a.jpg", "private_host"),
        ("http://[::1]/a.jpg", "private_host"),
        ("http://[::ffff:127.0.0.1]/a.jpg", "private_host"),
        ("http://[fe80::1]/a.jpg", "private_host"),
        ("http://0.0.0.0/a.jpg", "private_host"),
        ("http://8.8.8.8/a.jpg", None),
        ("https://i.imgur.com/a.jpg", None),  # a name: judged after resolving
    ],
)
def test_literal_host_guard(url, reason):
    assert url_literal_block_reason(url) == reason


def test_resolving_guard():
    assert resolve_block_reason("http://127.0.0.1/a.jpg") == "private_host"
    assert resolve_block_reason("http://no-such-host.invalid/a.jpg") == "dns_error"
    assert blocked_reason_for_ip("not-an-ip") == "bad_host"


def test_feed_record_leaves_out_download_fields_when_off():
    item = PostItem("M.1.A.1", "u", "Beauty", "t", None, None, "0101", "x", 0, {}, None, [], [])
    assert list(item.to_record()) == [f for f in FEED_FIELDS if f not in ("images", "image_failures")]
    item.images, item.image_failures = [], []
    assert list(item.to_record()) == list(FEED_FIELDS)


def test_backoff_schedule():
    from scrapy_ptt.middlewares import backoff_seconds

    assert backoff_seconds(b"3", 0, base_s=1.0, max_s=60) == 3.0
    assert backoff_seconds(b"3600", 0, base_s=1.0, max_s=60) == 60  # capped
    assert backoff_seconds(None, 0, base_s=1.0, max_s=60) == 1.0
    assert backoff_seconds(None, 2, base_s=1.0, max_s=60) == 4.0
    assert backoff_seconds(b"Wed, 21 Oct 2015 07:28:00 GMT", 1, base_s=0.5, max_s=60) == 1.0


def test_download_time_face_and_blur_filter():
    detect = pytest.importorskip("curation.detect")
    from curation.download_filter import face_filter_reason
    from scrapy_ptt.mirror import build_images

    images, detector = build_images(), detect.RetinaFaceDetector(threads=1)
    assert face_filter_reason(images["coffee.jpg"], detector=detector) == "no_face"
    assert face_filter_reason(images["t1_face4.jpg"], detector=detector) is None
    assert face_filter_reason(images["t1_face4.jpg"], detector=detector, min_blur_var=1e9) == "blurry"
    assert face_filter_reason(images["plain.png"], min_blur_var=1.0) == "blurry"  # a smooth ramp has no edges


def test_face_filter_in_a_crawl(tmp_path):
    pytest.importorskip("curation.detect")
    import json
    import subprocess
    import sys
    from pathlib import Path

    from scrapy_ptt.mirror import serve_mirror

    with serve_mirror() as base:
        cmd = [
            sys.executable, "-m", "scrapy", "crawl", "ptt_beauty", "-a", "start_date=2024-01-06",
            "-a", "end_date=2024-01-06", "-s", f"PTT_BASE_URL={base}", "-s", "AUTOTHROTTLE_ENABLED=False",
            "-s", "DOWNLOAD_DELAY=0", "-s", f"IMAGES_STORE={tmp_path / 'img'}", "-s", "PTT_ALLOW_PRIVATE_HOSTS=True",
            "-s", "PTT_FACE_FILTER=True", "-O", str(tmp_path / "feed.jsonl"),
        ]  # fmt: skip
        proc = subprocess.run(
            cmd, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=120
        )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (rec,) = [json.loads(x) for x in (tmp_path / "feed.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rec["list_title"] == "[正妹] 咖啡廳"
    assert [f["reason"] for f in rec["image_failures"]] == ["no_face"]  # coffee.jpg
    assert [i["url"].rsplit("/", 1)[1] for i in rec["images"]] == ["t1_face4.jpg"]


def test_gate_pass_with_and_without_form():
    from pathlib import Path
    from urllib.parse import parse_qs

    from scrapy import Request
    from scrapy.http import HtmlResponse
    from scrapy.utils.test import get_crawler

    from scrapy_ptt.spiders.ptt_beauty import PttBeautySpider

    crawler = get_crawler(PttBeautySpider, {"PTT_BASE_URL": "https://www.ptt.cc"})
    spider = PttBeautySpider.from_crawler(crawler, start_date="2024-01-01", end_date="2024-01-31")
    gate_url = "https://www.ptt.cc/ask/over18?from=%2Fbbs%2FBeauty%2Findex.html"
    req = Request("https://www.ptt.cc/bbs/Beauty/index.html", callback=spider.parse_newest)
    page = (Path(__file__).parent / "fixtures" / "ptt" / "over18_gate.html").read_bytes()
    for body in (page, b"<html><div class='over18-notice'>no form here</div></html>"):
        resp = HtmlResponse(url=gate_url, body=body, request=req, encoding="utf-8")
        gate = spider._pass_gate(resp)
        assert gate.method == "POST" and gate.url == "https://www.ptt.cc/ask/over18" and gate.dont_filter
        form = parse_qs(gate.body.decode())
        assert form["yes"] == ["yes"] and form["from"] == ["/bbs/Beauty/index.html"]
        assert gate.callback == spider.parse_newest and gate.meta["gate_passes"] == 1
    tired = HtmlResponse(url=gate_url, body=page, request=req.replace(meta={"gate_passes": 3}), encoding="utf-8")
    assert spider._pass_gate(tired) is False
    ok = HtmlResponse(url=req.url, body=b"<html><div class='r-ent'></div></html>", request=req, encoding="utf-8")
    assert spider._pass_gate(ok) is None


def test_private_host_guard_middleware_checks_each_request():
    import asyncio

    from scrapy import Request
    from scrapy.utils.test import get_crawler

    from scrapy_ptt.middlewares import PrivateHostBlocked, PrivateHostGuardMiddleware

    guard = PrivateHostGuardMiddleware(get_crawler(settings_dict={"PTT_ALLOW_PRIVATE_HOSTS": False}))
    redirected = Request("http://127.0.0.1:8080/latest/meta-data.jpg", meta={"ptt_guard_host": True})
    with pytest.raises(PrivateHostBlocked, match="private_host"):
        asyncio.run(guard.process_request(redirected))
    page = Request("http://127.0.0.1:8080/bbs/Beauty/index.html")  # the crawled site itself is not guarded
    assert asyncio.run(guard.process_request(page)) is None
    allowed = PrivateHostGuardMiddleware(get_crawler(settings_dict={"PTT_ALLOW_PRIVATE_HOSTS": True}))
    assert asyncio.run(allowed.process_request(redirected)) is None


def test_parse_post_skips_404_and_non_pages():
    from scrapy import Request
    from scrapy.http import HtmlResponse, Response
    from scrapy.utils.test import get_crawler

    from scrapy_ptt.spiders.ptt_beauty import PttBeautySpider

    crawler = get_crawler(PttBeautySpider, {"PTT_BASE_URL": "https://www.ptt.cc"})
    spider = PttBeautySpider.from_crawler(crawler, start_date="2024-01-01", end_date="2024-01-31", keyword="正妹")
    url = "https://www.ptt.cc/bbs/Beauty/M.1704067230.A.0A1.html"
    row = {"article_id": "M.1704067230.A.0A1", "url": url, "title": "[正妹] 測試", "push": 100}
    req = Request(url, callback=spider.parse_post, meta={"row": row})
    assert list(spider.parse_post(Response(url, body=b"\x89PNG\r\n", request=req))) == []
    gone = HtmlResponse(url, status=404, body=b"<html><title>404</title></html>", request=req, encoding="utf-8")
    assert list(spider.parse_post(gone)) == []
    stats = crawler.stats.get_stats()
    assert stats["ptt/posts/skipped/not_html"] == 1 and stats["ptt/posts/skipped/not_found"] == 1
    page = (Path(__file__).parent / "fixtures" / "ptt" / "article_sig_push.html").read_bytes()
    (item,) = spider.parse_post(HtmlResponse(url, body=page, request=req, encoding="utf-8"))
    assert item.keyword_match == ["title", "body"] and item.list_push == 100 and item.date == "0101"
    assert item.published_at == "2024-01-01T08:00:30+08:00" and item.pushes == {"push": 2, "boo": 1, "neutral": 1}


def test_walk_follows_older_pages_until_before_start_and_obeys_page_cap():
    from scrapy.utils.test import get_crawler

    from scrapy_ptt.parsing import parse_index
    from scrapy_ptt.spiders.ptt_beauty import PttBeautySpider

    page = parse_index(
        (Path(__file__).parent / "fixtures" / "ptt" / "index_cf_counts.html").read_text("utf-8"), "https://www.ptt.cc"
    )
    crawler = get_crawler(PttBeautySpider, {"PTT_BASE_URL": "https://www.ptt.cc"})
    spider = PttBeautySpider.from_crawler(crawler, start_date="2024-01-01", end_date="2024-01-02")
    out = list(spider._walk(page, 42))
    # rows 1-2 are in range; row 3 deleted; row 4 (1/03) out of range; the pinned row skipped; then index41
    assert [r.url.rsplit("/", 1)[1] for r in out] == [
        "M.1704067230.A.0A1.html",
        "M.1704153600.A.0B2.html",
        "index41.html",
    ]
    late = PttBeautySpider.from_crawler(crawler, start_date="2024-01-02", end_date="2024-01-03")
    assert not any("index41" in r.url for r in late._walk(page, 42))  # the page reaches before start: stop
    capped = PttBeautySpider.from_crawler(
        get_crawler(PttBeautySpider, {"PTT_MAX_INDEX_PAGES": 1, "PTT_BASE_URL": "https://www.ptt.cc"}),
        start_date="2024-01-01",
        end_date="2024-01-02",
    )
    assert not any("index41" in r.url for r in capped._walk(page, 42))


@pytest.mark.parametrize("resumed", [False, True])
def test_month_feeds_append_when_a_jobdir_crawl_resumes(tmp_path, resumed):
    from scrapy.utils.test import get_crawler

    from scrapy_ptt.spiders.ptt_beauty import PttBeautySpider

    jobdir = tmp_path / "job"
    jobdir.mkdir()
    if resumed:
        (jobdir / "requests.seen").write_text("x\n")  # what an interrupted crawl leaves behind
    settings = {"PTT_BASE_URL": "https://www.ptt.cc", "JOBDIR": str(jobdir), "PTT_FEED_BY_MONTH": "f-%(month)s.jsonl"}
    crawler = get_crawler(PttBeautySpider, settings)
    crawler.settings.frozen = False  # get_crawler freezes them; `scrapy crawl` calls from_crawler before freezing
    PttBeautySpider.from_crawler(crawler, start_date="2024-01-20", end_date="2024-02-10")
    feeds = crawler.settings.getdict("FEEDS")
    assert sorted(feeds) == ["f-2024-01.jsonl", "f-2024-02.jsonl"]
    assert all(opts["overwrite"] is not resumed for opts in feeds.values())

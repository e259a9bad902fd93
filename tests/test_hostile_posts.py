"""One hostile post loses only itself, and loudly: malformed links fail alone with
``bad_url``; a page that hits libxml2's limits (a text node over 10 MB, nesting deeper than 256) is recorded in a
stat and a warning naming the article instead of silently giving an empty body."""

from __future__ import annotations

import asyncio
import logging

import pytest
from scrapy import Request
from scrapy.http import HtmlResponse
from scrapy.utils.test import get_crawler

from scrapy_ptt.parsing import parse_article
from scrapy_ptt.spiders.ptt_beauty import PttBeautySpider

URL = "https://www.ptt.cc/bbs/Beauty/M.1704067230.A.0A1.html"
HEAD = (
    '<html><body><div id="main-content"><div class="article-metaline"><span class="article-meta-tag">標題</span>'
    '<span class="article-meta-value">[正妹] x</span></div>hello <a href="https://i.imgur.com/AbCdEf1.jpg">a</a>\n'
)
TAIL = "\n--\n※ 發信站: 批踢踢實業坊(ptt.cc)\n</div></body></html>"
BAD = ("http://[bad/a.jpg", "http://h.example:abc/b.jpg", "http://h.example:99999/c.png")


def _post(spider, html: str):
    row = {"article_id": "M.1704067230.A.0A1", "url": URL, "title": "[正妹] x", "push": 0}
    req = Request(URL, callback=spider.parse_post, meta={"row": row})
    return list(spider.parse_post(HtmlResponse(URL, body=html.encode("utf-8"), request=req, encoding="utf-8")))


def _spider():
    crawler = get_crawler(PttBeautySpider, {"PTT_BASE_URL": "https://www.ptt.cc"})
    return crawler, PttBeautySpider.from_crawler(crawler, start_date="2024-01-01", end_date="2024-01-31")


def test_malformed_links_fail_alone_in_body_and_pushes():
    links = " ".join(f'<a href="{u}">x</a>' for u in BAD)
    push = (
        '<div class="push"><span class="push-tag">推 </span><span class="push-content"><a href="http://[p/q.gif">q</a>'
    )
    html = HEAD + links + ' <a href="https://i.imgur.com/ZyXwVu9.png">ok</a>' + push + "</span></div>" + TAIL
    art = parse_article(html, "https://www.ptt.cc")
    assert art.image_urls == ["https://i.imgur.com/AbCdEf1.jpg", "https://i.imgur.com/ZyXwVu9.png"]
    assert art.bad_image_urls == [*BAD, "http://[p/q.gif"]
    crawler, spider = _spider()
    (item,) = _post(spider, html)  # the post stays
    assert item.image_urls == art.image_urls and item.bad_image_urls == art.bad_image_urls
    assert crawler.stats.get_value("ptt/links/malformed") == 4
    assert "bad_image_urls" not in item.to_record()  # not a feed field: the pipeline records them


def test_pipeline_records_bad_urls_and_keeps_the_post(tmp_path):
    """A URL that reaches the pipeline malformed (port out of range) fails alone when its Request is built."""
    from scrapy_ptt.items import PostItem
    from scrapy_ptt.pipelines import PttImagesPipeline

    crawler = get_crawler(settings_dict={"IMAGES_STORE": str(tmp_path), "PTT_ALLOW_PRIVATE_HOSTS": False})
    pipe = PttImagesPipeline.from_crawler(crawler)
    urls = ["http://h.example:99999/a.jpg", "http://127.0.0.1/b.jpg"]
    item = PostItem("M.1.A.1", URL, "Beauty", "t", None, None, "0101", "x", 0, {}, None, [], urls)
    item.bad_image_urls = ["http://[x/c.jpg"]
    pipe.spiderinfo = None
    out = asyncio.run(pipe.process_item(item))
    assert out.images == []
    reasons = {f["url"]: f["reason"] for f in out.image_failures}
    assert reasons == {"http://[x/c.jpg": "bad_url", urls[0]: "bad_url", urls[1]: "private_host"}


@pytest.mark.parametrize(
    "filler,kind",
    [("A" * (11 * 1024 * 1024), "Buffer size limit"), ("<div>" * 300 + "deep" + "</div>" * 300, "Excessive depth")],
)
def test_parser_limits_are_recorded_with_the_article(filler, kind, caplog):
    html = HEAD + filler + '<a href="https://i.imgur.com/LaTeR99.jpg">lost</a>' + TAIL
    art = parse_article(html, "https://www.ptt.cc")
    assert art.parse_problems and kind in art.parse_problems[0]
    crawler, spider = _spider()
    with caplog.at_level(logging.WARNING):
        (item,) = _post(spider, html)
    assert crawler.stats.get_value("ptt/posts/parse_limit") == 1
    warning = next(r.getMessage() for r in caplog.records if kind in r.getMessage())
    assert URL in warning and "missing" in warning
    assert item.image_urls == ["https://i.imgur.com/AbCdEf1.jpg"]  # what came before the limit is kept


def test_oversized_and_redirect_loop_reasons():
    """Scrapy 2.16+ says "max size" (not "maxsize"); a redirect loop is not a robots.txt filter."""
    from scrapy.exceptions import IgnoreRequest

    from scrapy_ptt.pipelines import failure_reason

    big = Exception("Received 30000000 bytes which is larger than download max size (20971520) in request <GET x>.")
    assert failure_reason(big, "http://a/x.jpg") == "too_large"
    assert failure_reason(IgnoreRequest("max redirections reached"), "http://a/x.jpg") == "redirect_loop"
    assert failure_reason(IgnoreRequest("Forbidden by robots.txt"), "http://a/x.jpg") == "filtered"

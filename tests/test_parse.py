"""Parsing helpers on the real pages in ../shared/ptt_html (skipped when absent) and on our own fixture pages."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from scrapy_ptt.parsing import (
    article_id_from_url,
    decode_cf_email,
    index_number,
    is_announcement,
    is_not_found,
    is_over18_gate,
    normalise_image_url,
    over18_target,
    parse_article,
    parse_index,
    parse_push_count,
    published_at,
    taipei_day_bounds,
)

FIXTURES = Path(__file__).parent / "fixtures" / "ptt"
PTT = "https://www.ptt.cc"


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


# ---------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(
    "text,expected",
    [("爆", 100), ("X1", -10), ("X9", -90), ("XX", -100), ("", 0), (None, 0), ("  37 ", 37), ("??", 0)],
)
def test_push_count(text, expected):
    assert parse_push_count(text) == expected


@pytest.mark.parametrize(
    "title,expected",
    [
        ("[公告] 板規", True),
        ("Fw: [公告] 板規", True),
        ("Re: [公告] 板聚", True),
        ("Re: Fw: [公告] x", True),
        ("[正妹] 公告欄前的正妹", False),
        ("[正妹] [公告]", False),
        ("", False),
    ],
)
def test_is_announcement(title, expected):
    assert is_announcement(title) is expected


@pytest.mark.parametrize(
    "url,expected",
    [
        ("http://imgur.com/SdtkkiQ", "https://i.imgur.com/SdtkkiQ.jpg"),
        ("https://m.imgur.com/Mm1Mm2M", "https://i.imgur.com/Mm1Mm2M.jpg"),
        ("https://i.imgur.com/AbCdEf1", "https://i.imgur.com/AbCdEf1.jpg"),
        ("http://i.imgur.com/AbCdEf1.JPG", "https://i.imgur.com/AbCdEf1.jpg"),
        ("https://imgur.com/AbCdEf1.png", "https://i.imgur.com/AbCdEf1.png"),
        ("//imgur.com/SdtkkiQ", "https://i.imgur.com/SdtkkiQ.jpg"),
        ("https://imgur.com/a/AlBuM12", None),
        ("https://imgur.com/gallery/GaLLery1", None),
        ("https://imgur.com/t/funny/AbCdEf1", None),
        ("https://i.imgur.com/VidEo12.gifv", None),
        ("https://imgur.com/AbCdE12,FgHiJ34", None),
        ("https://pbs.twimg.com/media/Tw1tter.jpg:large", "https://pbs.twimg.com/media/Tw1tter.jpg"),
        ("https://example.com/photo.png?width=600", "https://example.com/photo.png"),
        ("https://example.com/a/b.JPEG", "https://example.com/a/b.JPEG"),
        ("http://x.org/p.jpg%E3%80%82", "http://x.org/p.jpg"),
        ("https://png.example.com/page", None),
        ("https://example.com/photo.jpgx", None),
        ("ftp://example.com/a.jpg", None),
        ("https://www.youtube.com/watch?v=abc", None),
        ("http://[::1/a.jpg", None),
        ("", None),
    ],
)
def test_normalise_image_url(url, expected):
    assert normalise_image_url(url) == expected


def test_imgur_base_is_configurable():
    assert normalise_image_url("https://imgur.com/AbCdEf1", "http://127.0.0.1:9/imgur/") == (
        "http://127.0.0.1:9/imgur/AbCdEf1.jpg"
    )


def test_published_at_is_taipei_time():
    # 2023-12-31 16:26:08 UTC is already 1 January in Taipei (the answer key's first 2023 post).
    dt = published_at("M.1672503968.A.123")
    assert dt.isoformat() == "2023-01-01T00:26:08+08:00"
    assert dt.strftime("%m%d") == "0101"
    with pytest.raises(ValueError, match="not a PTT article id"):
        published_at("index.html")


def test_day_bounds_are_inclusive_taipei_days():
    from datetime import date

    lo, hi = taipei_day_bounds(date(2024, 1, 1), date(2024, 1, 31))
    assert published_at(f"M.{lo}.A.000").isoformat() == "2024-01-01T00:00:00+08:00"
    assert published_at(f"M.{hi}.A.000").isoformat() == "2024-01-31T23:59:59+08:00"
    assert hi - lo + 1 == 31 * 86400


def test_small_url_helpers():
    assert article_id_from_url("/bbs/Beauty/M.1501930028.A.1B3.html") == "M.1501930028.A.1B3"
    assert article_id_from_url("/bbs/Beauty/index.html") is None
    assert index_number("https://www.ptt.cc/bbs/Beauty/index2414.html") == 2414
    assert index_number("https://www.ptt.cc/bbs/Beauty/index.html") is None
    assert over18_target("/ask/over18?from=%2Fbbs%2FBeauty%2Findex.html") == "/bbs/Beauty/index.html"
    assert decode_cf_email("zz") == "" and decode_cf_email("") == ""


# ---------------------------------------------------------------- our fixture pages


def test_fixture_index_titles_counts_pinned():
    page = parse_index(read(FIXTURES / "index_cf_counts.html"), PTT)
    assert page.prev_url == "https://www.ptt.cc/bbs/Beauty/index41.html"
    assert page.next_url is None and page.newest_url == "https://www.ptt.cc/bbs/Beauty/index.html"
    titles = [r.title for r in page.rows]
    assert titles[0] == "[正妹] 寫信給 me@ex.tw 吧"  # Cloudflare's hidden e-mail decoded and joined
    assert titles[1] == "[神人] 粗體 與 斜體"  # all text nodes joined
    assert [r.push for r in page.rows] == [100, -30, -100, 0, 12]
    assert [r.deleted for r in page.rows] == [False, False, True, False, False]
    assert [r.pinned for r in page.rows] == [False, False, False, False, True]
    assert page.rows[2].title == "(本文已被刪除) <gone>"
    assert page.timestamps() == [1704067230, 1704153600, 1704240000]  # pinned and deleted rows left out


def test_fixture_article_links_signature_pushes():
    art = parse_article(read(FIXTURES / "article_sig_push.html"), PTT)
    assert art.title == "[正妹] 簽名檔測試" and art.author == "tester (測試)" and art.board == "Beauty"
    assert art.time_text == "Mon Jan  1 08:00:30 2024"
    assert art.body.startswith("內文有正妹") and "※ 發信站" not in art.body
    assert art.image_urls == [
        "https://i.imgur.com/AbCdEf1.jpg",
        "https://i.imgur.com/Zx9Yw8v.jpg",
        "https://i.imgur.com/Mm1Mm2M.jpg",
        "https://pbs.twimg.com/media/Tw1tter.jpg",
        "https://example.com/photo.png",
        "https://i.imgur.com/PuSh001.gif",  # from a push; the push's duplicate of AbCdEf1 is dropped
    ]
    assert art.signature_image_urls == ["https://i.imgur.com/SiGnAt1.png"]
    assert not any("cache.ptt.cc" in u for u in art.image_urls)  # richcontent ignored
    assert "https://imgur.com/a/AlBuM12" in art.non_image_links
    assert art.pushes == {"push": 2, "boo": 1, "neutral": 1}  # warning-box row not counted


def test_fixture_gate_page():
    html = read(FIXTURES / "over18_gate.html")
    assert is_over18_gate(html)
    assert is_over18_gate("", "https://www.ptt.cc/ask/over18?from=%2Fbbs%2FBeauty%2Findex.html")
    assert not is_over18_gate(read(FIXTURES / "article_sig_push.html"), "https://www.ptt.cc/bbs/Beauty/x.html")
    assert parse_article(html).title is None and parse_index(html).rows == []


# ---------------------------------------------------------------- every real page in ../shared/ptt_html


def _count_tags(html: str) -> dict[str, int]:
    """Independent count of push rows by tag (regex on the raw markup, not the parser)."""
    tags = re.findall(r'<span class="[^"]*push-tag">(.)', html)
    return {"push": tags.count("推"), "boo": tags.count("噓"), "neutral": tags.count("→")}


def test_every_real_page_parses(shared_ptt_html):
    pages = sorted(shared_ptt_html.glob("*.html"))
    assert len(pages) >= 15
    for path in pages:
        html = read(path)
        if "index" in path.name:
            page = parse_index(html, PTT)
            assert page.rows, path.name
            assert page.prev_url and index_number(page.prev_url), path.name
            linked = [r for r in page.rows if not r.deleted]
            assert all(r.article_id and r.title for r in linked), path.name
            assert len(page.rows) == html.count('class="r-ent"'), path.name
        else:
            art = parse_article(html, PTT)
            if is_not_found(html):
                assert art.title is None and art.pushes == {"push": 0, "boo": 0, "neutral": 0}
                continue
            assert art.title and art.author and art.board and art.time_text, path.name
            assert art.pushes == _count_tags(html), path.name
            assert "※ 發信站" not in art.body, path.name


def test_real_latest_index_pinned_and_deleted(shared_ptt_html):
    page = parse_index(read(shared_ptt_html / "beauty_index_latest_2018-03-08.html"), PTT)
    pinned = [r for r in page.rows if r.pinned]
    assert len(page.rows) == 25 and len(pinned) == 5
    assert all(is_announcement(r.title) for r in pinned)
    assert sum(r.deleted for r in page.rows) == 5
    assert page.next_url is None and page.prev_url.endswith("/index2414.html")
    assert 100 in [r.push for r in pinned]
    assert max(page.timestamps()) < 1520600000 < min(r.timestamp for r in pinned) + 10**9  # pinned are old


def test_real_2017_index_negative_push(shared_ptt_html):
    page = parse_index(read(shared_ptt_html / "beauty_index_2017-08_roycrxtw-example-list.html"), PTT)
    assert page.rows[0].push == -20
    assert sum(r.pinned for r in page.rows) == 4 and sum(r.deleted for r in page.rows) == 1


def test_real_newer_layout_deleted_row(shared_ptt_html):
    page = parse_index(read(shared_ptt_html / "Baseball_index10086_2020-07_gossipbay-board.html"), PTT)
    deleted = [r for r in page.rows if r.deleted]
    assert [(r.title, r.push) for r in deleted] == [("(本文已被刪除) <a30253>", 19)]
    assert page.next_url.endswith("/index10087.html")


def test_real_beauty_article(shared_ptt_html):
    art = parse_article(read(shared_ptt_html / "beauty_article_M.1501930028.A.1B3.html"), PTT)
    assert art.title == "[正妹] 石原聰美" and art.author == "gj94ek (我帥的太沉重)"
    assert art.time_text == "Sat Aug  5 18:47:02 2017"
    ids = ["SdtkkiQ", "70KeHU5", "rqXKHz7", "9OO8mn0", "7IRcApy", "AFpqhmK"]
    assert art.image_urls == [f"https://i.imgur.com/{i}.jpg" for i in ids]  # each once, richcontent ignored
    assert art.signature_image_urls == ["https://i.imgur.com/dorn34U.jpg"]
    assert art.pushes == {"push": 2, "boo": 0, "neutral": 0}


def test_real_odd_headers(shared_ptt_html):
    spans = parse_article(read(shared_ptt_html / "Gossiping_M.1123769450.A.A1A.html"))
    assert (spans.author, spans.board, spans.title) == ("MOTHERGOOSE", "Gossiping", "[名人] 有沒有人有希特勒的八卦阿")
    assert spans.time_text == "Wed Aug 10 15:03:16 2005" and spans.body.startswith("希特勒")
    plain = parse_article(read(shared_ptt_html / "Gossiping_M.1173456473.A.F4F.html"))
    assert plain.author == "julysecond (還是台灣好)" and plain.board == "Gossiping"
    assert plain.title == "Re: 有沒有俄國人的八卦？" and plain.time_text == "Sat Mar 10 00:07:48 2007"
    glued = parse_article(read(shared_ptt_html / "Soft_Job_M.1181824048.A.244.html"))
    assert glued.title == "[閒聊] 開版妙戊" and glued.time_text == "Thu Jun 14 20:27:24 2007"


def test_real_pushes_with_links_and_warning_box(shared_ptt_html):
    big = parse_article(read(shared_ptt_html / "Gossiping_M.1119222611.A.7A9.html"))
    assert sum(big.pushes.values()) == 1491  # 1491 div.push rows plus one warning box, which is not a push
    linked = parse_article(read(shared_ptt_html / "Gossiping_M.1119222660.A.94E.html"))
    assert "https://i.imgur.com/tnlLDAU.jpg" in linked.push_image_urls
    assert not any("tinyurl" in u for u in linked.image_urls)
    bda = parse_article(read(shared_ptt_html / "Gossiping_M.1593841729.A.BDA.html"))
    assert (bda.pushes["push"], bda.pushes["boo"]) == (14, 5)  # as the upstream test expects


def test_real_404_page(shared_ptt_html):
    assert is_not_found(read(shared_ptt_html / "Gossiping_M.1577579359.A.B76.html"))
    assert not is_not_found(read(shared_ptt_html / "beauty_article_M.1501930028.A.1B3.html"))


def test_answer_key_dates_match_article_ids(shared_ptt_html):
    """The course answer key's MMDD for 5425 real 2023 posts equals our id -> Asia/Taipei date."""
    lines = read(shared_ptt_html / "beauty2023_answer_articles.jsonl").splitlines()
    assert len(lines) > 5000
    for line in lines:
        rec = json.loads(line)
        assert published_at(article_id_from_url(rec["url"])).strftime("%m%d") == rec["date"], rec


def test_answer_key_image_urls_survive_normalisation(shared_ptt_html):
    """Every direct image URL in the keyword answer key is kept by our rules, except imgur albums (/a/...), which
    the seeds kept only because the link happened to end in .gif and which are not one image."""
    urls = json.loads(read(shared_ptt_html / "beauty2023_answer_keyword_0501_0531_zhengmei.json"))["image_urls"]
    assert len(urls) > 5000
    dropped = [u for u in urls if not normalise_image_url(u)]
    assert dropped and all("imgur.com/a/" in u for u in dropped)
    assert len(urls) - len(dropped) > 5400

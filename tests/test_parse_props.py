"""Property-based tests: the parsing helpers never raise on arbitrary or truncated HTML."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scrapy_ptt.parsing import (
    Article,
    IndexPage,
    is_announcement,
    is_not_found,
    is_over18_gate,
    normalise_image_url,
    parse_article,
    parse_index,
    parse_push_count,
)

FIXTURES = Path(__file__).parent / "fixtures" / "ptt"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "ptt_html"
PAGES = sorted(FIXTURES.glob("*.html")) + (
    [p for p in sorted(SHARED.glob("*.html")) if p.stat().st_size < 60_000] if SHARED.is_dir() else []
)
TEXTS = [p.read_text(encoding="utf-8", errors="replace") for p in PAGES]

TAGS = st.sampled_from(
    [
        '<div class="r-ent">',
        '<div class="r-list-sep"></div>',
        '<div class="title">',
        '<a href="/bbs/Beauty/M.1704067230.A.0A1.html">',
        '<a class="btn wide" href="/bbs/Beauty/index3.html">&lsaquo; 上頁</a>',
        '<div id="main-content" class="bbs-screen bbs-content">',
        '<div class="article-metaline"><span class="article-meta-tag">作者</span>',
        '<span class="article-meta-value">',
        '<div class="push"><span class="hl push-tag">推 </span>',
        '<span class="f3 push-content">',
        '<div class="richcontent">',
        '<span class="__cf_email__" data-cfemail="zz12">',
        '<a href="http://imgur.com/SdtkkiQ">',
        "※ 發信站",
        "--\n",
        "</div>",
        "</a>",
        "</span>",
        "<!--",
        "<![CDATA[",
        "\x00",
    ]
)
SOUP = st.lists(st.one_of(TAGS, st.text(max_size=20)), max_size=40).map("".join)


def _check_all(html) -> None:
    assert isinstance(parse_index(html, "https://www.ptt.cc"), IndexPage)
    art = parse_article(html, "https://www.ptt.cc")
    assert isinstance(art, Article)
    assert all(u.startswith(("http://", "https://")) for u in art.image_urls)
    assert is_over18_gate(html) in (True, False)
    assert is_not_found(html) in (True, False)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SOUP)
def test_helpers_never_raise_on_tag_soup(html):
    _check_all(html)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_helpers_never_raise_on_bytes(data):
    _check_all(data)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(range(len(TEXTS))), st.floats(0, 1))
def test_helpers_never_raise_on_truncated_real_pages(i, frac):
    text = TEXTS[i]
    _check_all(text[: int(len(text) * frac)])


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_small_helpers_never_raise(s):
    assert isinstance(parse_push_count(s), int)
    assert is_announcement(s) in (True, False)
    out = normalise_image_url(s)
    assert out is None or out.lower().rsplit(".", 1)[-1] in ("jpg", "jpeg", "png", "gif")
    out = normalise_image_url("https://imgur.com/" + s)
    assert out is None or out.startswith("https://i.imgur.com/")

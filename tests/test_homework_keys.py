"""The homework exports reproduce the course's answer keys (../shared/ptt_html/beauty2023_answer_*).

The keys are what students are graded against: ``articles.jsonl`` (5,425 posts of 2023: date, title exactly as on
the board, URL), ``popular_articles.jsonl`` (the 爆 posts) and the keyword file for 正妹 in May (5,449 image links
as written in the posts, ``http://`` and ``imgur.com/a/ID.gif`` included). This test builds a board from the keys
(one row per key line, its title verbatim; the 爆 posts get a 爆 push count; May's 正妹 posts carry the keyword
file's links, in order, in their bodies and pushes), serves it with the offline mirror, crawls it with the real
``scrapy crawl ptt_beauty``, runs ``ptt-homework`` on the feed and compares the files with the keys. The only
rewrite is the site: the mirror's ``http://127.0.0.1:PORT`` is read as ``https://www.ptt.cc``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scrapy_ptt.mirror import Board, serve_mirror
from scrapy_ptt.parsing import ARTICLE_ID_RE

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
KEYS = {
    "articles": "beauty2023_answer_articles.jsonl",
    "popular": "beauty2023_answer_popular_articles.jsonl",
    "keyword": "beauty2023_answer_keyword_0501_0531_zhengmei.json",
}


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def board_from_keys(articles: list[dict], popular: list[dict], image_urls: list[str]) -> Board:
    hot = {r["url"] for r in popular}
    carriers = [r for r in articles if r["date"].startswith("05") and "正妹" in r["title"]]
    share = -(-len(image_urls) // len(carriers))
    links = {r["url"]: image_urls[i * share : (i + 1) * share] for i, r in enumerate(carriers)}
    posts = []
    for r in articles:
        m = ARTICLE_ID_RE.search(r["url"])
        ts, hexid = m.group(0).split(".")[1], m.group(0).split(".")[3]
        mine = links.get(r["url"], [])
        cut = (2 * len(mine)) // 3  # two thirds in the body, the rest in pushes: both paths are read
        body = "內文\n" + "".join(f"{{link:{u}}}\n" for u in mine[:cut])
        pushes = [["推", f"fan{j}", f": {{link:{u}}}"] for j, u in enumerate(mine[cut:])]
        posts.append(
            {"ts": int(ts), "hex": hexid, "title": r["title"], "author": "poster (暱稱)",
             "push": "爆" if r["url"] in hot else "1", "body": body, "pushes": pushes}
        )  # fmt: skip
    posts.sort(key=lambda p: p["ts"])
    return Board("Beauty", posts, [], {}, rows_per_page=20)


def test_the_board_built_from_the_keys_holds_every_key_line(shared_ptt_html):
    articles = _jsonl(shared_ptt_html / KEYS["articles"])
    popular = _jsonl(shared_ptt_html / KEYS["popular"])
    urls = json.loads((shared_ptt_html / KEYS["keyword"]).read_text(encoding="utf-8"))["image_urls"]
    board = board_from_keys(articles, popular, urls)
    assert len(board.posts) == len(articles) and sum(p["push"] == "爆" for p in board.posts) == len(popular)
    carried = [
        u for p in board.posts for u in [*p["body"].split("\n"), *(c for _, _, c in p["pushes"])] if "link:" in u
    ]
    assert len(carried) == len(urls)
    odd = [r["title"] for r in articles if r["title"] != " ".join(r["title"].split())]
    assert len(odd) >= 100  # the keys really do hold titles with blank runs and trailing blanks


@pytest.mark.slow
def test_a_crawl_of_the_keys_board_exports_the_keys(shared_ptt_html, tmp_path):
    articles = _jsonl(shared_ptt_html / KEYS["articles"])
    popular = _jsonl(shared_ptt_html / KEYS["popular"])
    urls = json.loads((shared_ptt_html / KEYS["keyword"]).read_text(encoding="utf-8"))["image_urls"]
    feed = tmp_path / "feed.jsonl"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    with serve_mirror(board=board_from_keys(articles, popular, urls)) as base:
        crawl = [
            str(BIN / "scrapy"), "crawl", "ptt_beauty", "-a", "start_date=2023-01-01", "-a", "end_date=2023-12-31",
            "-a", "keyword=正妹", "-s", f"PTT_BASE_URL={base}", "-s", "DOWNLOAD_DELAY=0",
            "-s", "AUTOTHROTTLE_ENABLED=False", "-s", "CONCURRENT_REQUESTS_PER_DOMAIN=16", "-s", "LOG_LEVEL=WARNING",
            "-O", str(feed),
        ]  # fmt: skip
        proc = subprocess.run(crawl, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = {}
    for kind, extra in (
        ("articles", []),
        ("popular", []),
        ("keyword", ["--start-date", "2023-05-01", "--end-date", "2023-05-31"]),
    ):
        out[kind] = tmp_path / f"{kind}.out"
        cmd = [str(BIN / "ptt-homework"), kind, str(feed), "-o", str(out[kind]), *extra]
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr

    def on_ptt(rows: list[dict]) -> list[dict]:
        return [{**r, "url": r["url"].replace(base, "https://www.ptt.cc")} for r in rows]

    assert on_ptt(_jsonl(out["articles"])) == articles
    assert on_ptt(_jsonl(out["popular"])) == popular
    assert json.loads(out["keyword"].read_text(encoding="utf-8")) == {"image_urls": urls}


def test_real_index_pages_keep_the_titles_as_written(shared_ptt_html):
    from scrapy_ptt.parsing import parse_index

    def titles(name: str) -> dict[str, str]:
        page = parse_index((shared_ptt_html / name).read_text(encoding="utf-8"), "https://www.ptt.cc")
        return {r.title: r.title_raw for r in page.rows}

    assert (
        titles("beauty_index_latest_2018-03-08.html")["[神人] 大阪USJ員工"] == "[神人] 大阪USJ員工 "
    )  # trailing blank
    assert titles("beauty_index2414_2018-03.html")["Fw: [新聞] 林志玲病癒復出丰采依舊 臉圓一圈網友驚"] == (
        "Fw: [新聞] 林志玲病癒復出丰采依舊\u3000臉圓一圈網友驚"  # an ideographic space
    )
    assert titles("beauty_index_2017-08_roycrxtw-example-list.html")["[正妹] 南港高工 氣質的可愛正妹"] == (
        "[正妹] 南港高工  氣質的可愛正妹"  # a run of two blanks
    )

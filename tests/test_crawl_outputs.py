"""Feed split by month (Scrapy FEEDS + item filters) and the homework files made from a real crawl's feed."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from scrapy_ptt.export_homework import FeedError, article_lines, keyword_images, main, read_feed
from scrapy_ptt.feeds import MonthFilter, month_feeds, months_between
from scrapy_ptt.mirror import serve_mirror

REPO = Path(__file__).resolve().parents[1]
FAST = ["-s", "AUTOTHROTTLE_ENABLED=False", "-s", "DOWNLOAD_DELAY=0"]


@pytest.fixture(scope="module")
def split_crawl(tmp_path_factory):
    out = tmp_path_factory.mktemp("split")
    with serve_mirror() as base:
        cmd = [
            sys.executable, "-m", "scrapy", "crawl", "ptt_beauty", "-a", "start_date=2023-12-15",
            "-a", "end_date=2024-02-10", "-a", "keyword=正妹", "-s", f"PTT_BASE_URL={base}", *FAST,
            "-s", f"PTT_FEED_BY_MONTH={out}/feeds/%(name)s-%(month)s.jsonl", "-O", str(out / "feed.jsonl"),
        ]  # fmt: skip
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def test_month_split_partitions_the_feed(split_crawl):
    whole = {r["article_id"]: r for r in _lines(split_crawl / "feed.jsonl")}
    files = sorted((split_crawl / "feeds").glob("*.jsonl"))
    assert [f.name for f in files] == [
        "ptt_beauty-2023-12.jsonl",
        "ptt_beauty-2024-01.jsonl",
        "ptt_beauty-2024-02.jsonl",
    ]
    seen = []
    for f in files:
        month = f.stem.split("-", 1)[1]
        recs = _lines(f)
        assert recs and all(r["published_at"].startswith(month) for r in recs)
        assert all(r == whole[r["article_id"]] for r in recs)
        seen += [r["article_id"] for r in recs]
    assert sorted(seen) == sorted(whole)
    assert len(whole) == 26


def test_homework_articles_and_popular(split_crawl, tmp_path):
    assert main(["articles", str(split_crawl / "feed.jsonl"), "-o", str(tmp_path / "articles.jsonl")]) == 0
    lines = _lines(tmp_path / "articles.jsonl")
    assert len(lines) == 26 and all(list(r) == ["date", "title", "url"] for r in lines)
    assert [r["url"] for r in lines] == sorted((r["url"] for r in lines), key=lambda u: u.split("/M.")[1])
    assert lines[0]["date"] == "1220" and lines[-1]["date"] == "0205"
    assert main(["popular", str(split_crawl / "feed.jsonl"), "-o", str(tmp_path / "popular.jsonl")]) == 0
    assert [r["title"] for r in _lines(tmp_path / "popular.jsonl")] == ["[正妹] 新年第一正"]  # the only 爆 row


def test_homework_keyword_images(split_crawl, tmp_path):
    out = tmp_path / "kw.json"
    argv = ["keyword", str(split_crawl / "feed.jsonl"), "-o", str(out), "--start-date", "2024-01-01"]
    assert main([*argv, "--end-date", "2024-01-31"]) == 0
    urls = json.loads(out.read_text(encoding="utf-8"))["image_urls"]
    feed = read_feed(split_crawl / "feed.jsonl")
    jan = [r for r in feed if r["published_at"].startswith("2024-01")]
    # the links as written in the posts (the answer keys' strings), not the normalised download URLs
    expected = list(dict.fromkeys(u for r in jan if r["keyword_match"] for u in r["image_urls_raw"]))
    assert urls == expected and len(urls) == len(set(urls)) > 10
    assert not any(u.endswith("/astronaut.png") for u in urls)  # [帥哥] 太空人 does not match 正妹


def test_homework_errors_name_the_file(tmp_path, capsys):
    assert main(["articles", str(tmp_path / "none.jsonl"), "-o", str(tmp_path / "a.jsonl")]) == 2
    assert "none.jsonl: no such feed" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n", encoding="utf-8")
    with pytest.raises(FeedError, match="bad.jsonl:1"):
        read_feed(bad)
    rec = {"article_id": "M.1.A.1", "published_at": "2024-01-01T00:00:00+08:00", "date": "0101", "list_title": "t",
           "url": "u", "keyword": None, "keyword_match": [], "image_urls": ["http://x/a.jpg"]}  # fmt: skip
    with pytest.raises(FeedError, match="keyword=正妹"):
        keyword_images([rec], tmp_path / "f.jsonl")
    assert article_lines([rec]) == [{"date": "0101", "title": "t", "url": "u"}]
    feed = tmp_path / "f.jsonl"
    feed.write_text(json.dumps(rec) + "\n", encoding="utf-8")
    out = tmp_path / "k.json"
    args = ["articles", str(feed), "-o", str(out), "--start-date", "2024-02-01", "--end-date", "2024-01-31"]
    assert main(args) == 2 and not out.exists()
    assert "--end-date 2024-01-31 is before --start-date 2024-02-01" in capsys.readouterr().err


def test_month_helpers():
    assert months_between(date(2023, 11, 30), date(2024, 2, 1)) == ["2023-11", "2023-12", "2024-01", "2024-02"]
    feeds = month_feeds("out/%(name)s-%(month)s.jsonl", date(2024, 1, 5), date(2024, 2, 1))
    assert list(feeds) == ["out/%(name)s-2024-01.jsonl", "out/%(name)s-2024-02.jsonl"]
    f = MonthFilter({"month": "2024-02"})
    assert f.accepts({"published_at": "2024-02-29T23:59:59+08:00"})
    assert not f.accepts({"published_at": "2024-03-01T00:00:00+08:00"}) and not f.accepts({})
    with pytest.raises(ValueError, match="YYYY-MM"):
        MonthFilter({"month": "Jan"})
    with pytest.raises(ValueError, match="%\\(month\\)s"):
        month_feeds("out.jsonl", date(2024, 1, 1), date(2024, 1, 2))

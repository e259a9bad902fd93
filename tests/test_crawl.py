"""Whole crawls with the real ``scrapy crawl ptt_beauty`` command against the loopback mirror (no mocks)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from scrapy_ptt.mirror import Faults, build_images, load_board, serve_mirror

REPO = Path(__file__).resolve().parents[1]
TAIPEI = timezone(timedelta(hours=8))
FAST = ["-s", "AUTOTHROTTLE_ENABLED=False", "-s", "DOWNLOAD_DELAY=0", "-s", "LOG_LEVEL=INFO"]


def expected_ids(start: str, end: str) -> set[str]:
    """In-range posts straight from the board data (independent of the spider's parsing)."""
    lo = datetime.fromisoformat(start).replace(tzinfo=TAIPEI)
    hi = datetime.fromisoformat(end).replace(tzinfo=TAIPEI) + timedelta(days=1)
    out = set()
    for p in load_board().posts:
        when = datetime.fromtimestamp(p["ts"], TAIPEI)
        skip = p.get("deleted") or p.get("gone") or "[公告]" in p["title"] or not p["title"].strip()
        if lo <= when < hi and not skip:
            out.add(f"M.{p['ts']}.A.{p['hex']}")
    return out


def crawl_cmd(base: str, out: Path, *extra: str, start="2024-01-01", end="2024-01-31", keyword="正妹") -> list[str]:
    cmd = [sys.executable, "-m", "scrapy", "crawl", "ptt_beauty", "-a", f"start_date={start}", "-a", f"end_date={end}"]
    if keyword:
        cmd += ["-a", f"keyword={keyword}"]
    return cmd + ["-s", f"PTT_BASE_URL={base}", "-s", f"PTT_STATS_FILE={out / 'stats.json'}", *FAST, *extra]


def run_crawl(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def read_feed(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def january_crawl(tmp_path_factory):
    """The README's command against the mirror, with downloads on (run once for the tests below)."""
    out = tmp_path_factory.mktemp("crawl")
    with serve_mirror() as base:
        cmd = crawl_cmd(
            base,
            out,
            "-s",
            f"IMAGES_STORE={out / 'images'}",
            "-s",
            "PTT_ALLOW_PRIVATE_HOSTS=True",
            "-s",
            f"PTT_IMGUR_BASE={base}/imgur",
            "-O",
            str(out / "feed.jsonl"),
        )
        run_crawl(cmd)
    feed = read_feed(out / "feed.jsonl")
    return {
        "base": base,
        "out": out,
        "feed": feed,
        "by_title": {r["list_title"]: r for r in feed},
        "stats": json.loads((out / "stats.json").read_text()),
    }


def test_feed_has_exactly_the_posts_in_range(january_crawl):
    ids = [r["article_id"] for r in january_crawl["feed"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == expected_ids("2024-01-01", "2024-01-31")
    assert len(ids) == 18


def test_feed_records_follow_the_contract(january_crawl):
    from scrapy_ptt.items import FEED_FIELDS

    raw = (january_crawl["out"] / "feed.jsonl").read_text(encoding="utf-8")
    assert "\\u" not in raw and "正妹" in raw  # UTF-8, not escaped
    for rec in january_crawl["feed"]:
        assert list(rec) == list(FEED_FIELDS)
        assert rec["board"] == "Beauty" and rec["keyword"] == "正妹"
        assert rec["url"] == f"{january_crawl['base']}/bbs/Beauty/{rec['article_id']}.html"
        when = datetime.fromisoformat(rec["published_at"])
        assert when.utcoffset() == timedelta(hours=8) and rec["date"] == when.strftime("%m%d")
        assert set(rec["pushes"]) == {"push", "boo", "neutral"}


def test_boundaries_in_taipei_time(january_crawl):
    first = january_crawl["by_title"]["[正妹] 新年第一正"]
    assert first["published_at"] == "2024-01-01T00:00:30+08:00" and first["date"] == "0101"  # 2023-12-31 in UTC
    assert january_crawl["by_title"]["[正妹] 一月最後一篇"]["date"] == "0131"
    titles = set(january_crawl["by_title"])
    assert "[正妹] 二〇二三最後一篇" not in titles and "[正妹] 二月第一篇" not in titles


def test_skip_counts_in_stats(january_crawl):
    s = january_crawl["stats"]
    assert s["ptt/posts/kept"] == 18 and s["item_scraped_count"] == 18
    assert s["ptt/posts/skipped/announcement"] == 2  # [公告] and Fw: [公告]
    assert s["ptt/posts/skipped/deleted"] == 1
    assert s["ptt/posts/skipped/not_found"] == 1
    assert s["ptt/posts/skipped/empty_title"] == 1
    assert s["ptt/pages/probe"] >= 1  # the newest page is all February: found the range by binary search
    assert s["ptt/pages/index"] == 5  # pages 2..6; page 1 (all December) never fetched


def test_titles_pushes_keyword_match(january_crawl):
    by = january_crawl["by_title"]
    assert by["[正妹] 聯絡 beauty@example.com"]["title"] == "[正妹] 聯絡 beauty@example.com"  # Cloudflare span
    assert by["[神人] 捷運上的女生"]["keyword_match"] == ["body"]
    assert by["[正妹] 團體照"]["keyword_match"] == ["title"]
    assert by["Re: [正妹] 團體照"]["keyword_match"] == ["title"]
    assert by["[帥哥] 太空人"]["keyword_match"] == []
    assert by["[正妹] 新年第一正"]["list_push"] == 100 and by["[正妹] 圖壞了"]["list_push"] == -10
    assert by["[正妹] 推文有圖"]["pushes"] == {"push": 2, "boo": 1, "neutral": 1}  # warning box not counted
    assert by["[正妹] 新年第一正"]["author"] == "firstone (第一)"


def test_image_urls(january_crawl):
    base, by = january_crawl["base"], january_crawl["by_title"]
    assert by["[正妹] 推文有圖"]["image_urls"] == [f"{base}/img/astronaut_wide.jpg", f"{base}/imgur/Xy7Kp9Q.jpg"]
    assert by["[正妹] 有簽名檔"]["image_urls"] == [f"{base}/img/t1_face4_flip.jpg"]  # signature's plain.png left out
    assert by["[正妹] 手機連結"]["image_urls"] == [f"{base}/imgur/Qw8Er7T.jpg", f"{base}/img/t1_face2_wide.jpg"]
    assert by["[正妹] 咖啡廳"]["image_urls"] == [f"{base}/img/coffee.jpg", f"{base}/img/t1_face4.jpg"]  # no youtube
    assert by["[正妹] 團體照"]["image_urls"] == [f"{base}/img/t1.jpg", f"{base}/img/t1_face2.jpg"]  # de-duplicated


def test_downloads_store_original_bytes(january_crawl):
    out, images = january_crawl["out"], build_images()
    stored = 0
    for rec in january_crawl["feed"]:
        for img in rec["images"]:
            path = out / "images" / img["path"]
            assert img["path"] == f"full/{hashlib.sha1(img['url'].encode()).hexdigest()}.{path.suffix[1:]}"
            assert path.suffix in (".jpg", ".png", ".gif")
            name = img["url"].rsplit("/", 1)[1]
            if "/img/" in img["url"]:
                assert path.read_bytes() == images[name]
            stored += 1
        if not rec["keyword_match"]:
            assert rec["images"] == [] and rec["image_failures"] == []
    assert stored >= 20
    assert january_crawl["stats"]["ptt/images/ok"] == stored


def test_image_failures_never_fail_the_post(january_crawl):
    base = january_crawl["base"]
    rec = january_crawl["by_title"]["[正妹] 圖壞了"]
    assert {f["url"]: f["reason"] for f in rec["image_failures"]} == {
        f"{base}/img/corrupt.jpg": "decode_error",
        f"{base}/img/empty.jpg": "empty",
        f"{base}/imgur/Gon3Zzz.jpg": "imgur_removed",
    }
    assert [i["url"] for i in rec["images"]] == [f"{base}/img/t1_face5.jpg"]


def test_private_hosts_refused_by_default_and_no_downloads_without_store(tmp_path):
    with serve_mirror() as base:
        run_crawl(
            crawl_cmd(
                base,
                tmp_path,
                "-s",
                f"IMAGES_STORE={tmp_path / 'img'}",
                "-O",
                str(tmp_path / "a.jsonl"),
                start="2024-01-02",
                end="2024-01-03",
            )
        )
        run_crawl(crawl_cmd(base, tmp_path, "-O", str(tmp_path / "b.jsonl"), start="2024-01-02", end="2024-01-03"))
    guarded = read_feed(tmp_path / "a.jsonl")
    assert {r["list_title"] for r in guarded} == {"[正妹] 團體照", "[神人] 捷運上的女生"}
    reasons = [f["reason"] for r in guarded for f in r["image_failures"]]
    assert reasons and set(reasons) == {"private_host"}
    assert not any(r["images"] for r in guarded)
    assert not (tmp_path / "img" / "full").exists() or not any((tmp_path / "img" / "full").iterdir())
    plain = read_feed(tmp_path / "b.jsonl")
    assert plain and all("images" not in r and "image_failures" not in r for r in plain)


@pytest.mark.parametrize(
    "args,needle",
    [
        (["-a", "start_date=2024-13-01", "-a", "end_date=2024-01-31"], "start_date"),
        (["-a", "start_date=2024-02-01", "-a", "end_date=2024-01-31"], "end_date"),
        (["-a", "start_date=2024-01-01"], "end_date"),
        (["-a", "start_date=2024-01-01", "-a", "end_date=2024-01-31", "-a", "board=../etc"], "board"),
        (["-a", "start_date=2024-01-01", "-a", "end_date=2024-01-31", "-s", "PTT_BASE_URL=ptt.cc"], "PTT_BASE_URL"),
        (
            ["-a", "start_date=2024-01-01", "-a", "end_date=2024-01-31", "-s", "PTT_FEED_BY_MONTH=x.jsonl"],
            "PTT_FEED_BY_MONTH",
        ),
    ],
)
def test_bad_arguments_stop_at_once(args, needle, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "scrapy", "crawl", "ptt_beauty", "-s", "PTT_BASE_URL=http://127.0.0.1:9", *args,
         "-O", str(tmp_path / "x.jsonl")],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2  # a usage error, before Scrapy's engine starts
    lines = [ln for ln in proc.stderr.splitlines() if "bad argument" in ln]
    assert len(lines) == 1 and f" {needle}=" in lines[0]
    assert "Traceback" not in proc.stderr and "Task exception" not in proc.stderr
    assert "Spider opened" not in proc.stderr


def test_misspelt_board_fails_instead_of_an_empty_feed(tmp_path):
    with serve_mirror() as base:
        cmd = crawl_cmd(base, tmp_path, "-a", "board=Beuaty", "-O", str(tmp_path / "feed.jsonl"))
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    line = next(ln for ln in proc.stderr.splitlines() if "bad argument" in ln)
    assert "board=Beuaty" in line and "/bbs/Beuaty/index.html is 404" in line
    assert "'finish_reason': 'board_not_found'" in proc.stderr and "Traceback" not in proc.stderr


# ---------------------------------------------------------------- a hostile server


@pytest.mark.slow
def test_crawl_through_gate_errors_and_slow_pages(tmp_path):
    """Gate redirects (cookie 'expired'), a 500 then ok, a 429 then ok, a slow page, pinned rows, a 404."""
    board = load_board()
    art = {p["title"]: f"/bbs/Beauty/M.{p['ts']}.A.{p['hex']}.html" for p in board.posts}
    faults = Faults(
        gate_once={"/bbs/Beauty/index.html", art["[正妹] 團體照"], "/bbs/Beauty/index4.html"},
        error_500_once={art["[神人] 捷運上的女生"], "/img/t1.jpg"},
        error_429_once={"/bbs/Beauty/index5.html", art["[帥哥] 太空人"]},
        slow_s={art["[正妹] 咖啡廳"]: 2.0},
    )
    with serve_mirror(faults=faults) as base:
        run_crawl(
            crawl_cmd(base, tmp_path, "-s", f"IMAGES_STORE={tmp_path / 'img'}", "-s", "PTT_ALLOW_PRIVATE_HOSTS=True",
                      "-s", f"PTT_IMGUR_BASE={base}/imgur", "-O", str(tmp_path / "feed.jsonl"),
                      end="2024-02-29")
        )  # fmt: skip
    feed = read_feed(tmp_path / "feed.jsonl")
    ids = [r["article_id"] for r in feed]
    assert len(ids) == len(set(ids)) and set(ids) == expected_ids("2024-01-01", "2024-02-29")
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["ptt/gate_passed"] == 3
    assert stats["ptt/posts/skipped/pinned"] == 3  # newest page walked this time: its pinned [公告] left out
    assert stats["ptt/posts/skipped/not_found"] == 1
    assert faults.hits[art["[神人] 捷運上的女生"]] == 2 and faults.hits["/bbs/Beauty/index5.html"] == 2
    assert faults.hits[art["[帥哥] 太空人"]] == 2 and faults.hits["/img/t1.jpg"] == 2
    assert faults.hits["/ask/over18"] >= 3  # the gate's page and its form were really used
    assert stats["ptt/backoff/count"] == 4  # 2 x 500 + 2 x 429, each waited for before its retry
    assert stats["ptt/backoff/seconds"] >= 2.0  # Retry-After: 1 on both 429s
    group = next(r for r in feed if r["list_title"] == "[正妹] 團體照")
    assert f"{base}/img/t1.jpg" in [i["url"] for i in group["images"]]  # downloaded after its 500


@pytest.mark.slow
def test_jobdir_interrupted_then_resumed_gives_every_post_once(tmp_path):
    board = load_board()
    slow = {f"/bbs/Beauty/M.{p['ts']}.A.{p['hex']}.html": 0.4 for p in board.posts}
    faults = Faults(slow_s=slow)
    feed = tmp_path / "feed.jsonl"
    with serve_mirror(faults=faults) as base:
        cmd = crawl_cmd(base, tmp_path, "-s", f"JOBDIR={tmp_path / 'job'}", "-s", f"IMAGES_STORE={tmp_path / 'img'}",
                        "-s", "PTT_ALLOW_PRIVATE_HOSTS=True", "-s", "CONCURRENT_REQUESTS_PER_DOMAIN=1",
                        "-o", str(feed))  # fmt: skip
        first = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while sum(n for path, n in faults.hits.items() if "/M." in path) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        first.send_signal(signal.SIGINT)  # Ctrl-C: Scrapy shuts down gracefully and keeps the queue in JOBDIR
        _, err = first.communicate(timeout=60)
        assert "(shutdown)" in err, err[-2000:]
        n_first = len(read_feed(feed))
        assert 0 < n_first < 18
        run_crawl(cmd)
    ids = [r["article_id"] for r in read_feed(feed)]
    assert len(ids) == len(set(ids)), "a post came out twice"
    assert set(ids) == expected_ids("2024-01-01", "2024-01-31")
    assert os.path.isdir(tmp_path / "job" / "requests.queue")

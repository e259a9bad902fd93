"""A dead or silent board fails the crawl (exit 1, one line naming the URL) and keeps the previous ``-O`` feed;
a misspelt ``-a`` name is refused before the engine starts; a good crawl still replaces the feed."""

from __future__ import annotations

import json
import socket
import subprocess
import threading

import pytest

from scrapy_ptt.mirror import serve_mirror
from tests.test_crawl import REPO, crawl_cmd, read_feed

NO_RETRY = ["-s", "RETRY_TIMES=0", "-s", "DOWNLOAD_TIMEOUT=2", "-s", "ROBOTSTXT_OBEY=False"]
OLD_FEED = '{"article_id": "yesterday"}\n'


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: connections are refused


class SilentServer:
    """Accepts connections and never answers (a board that hangs)."""

    def __enter__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.conns: list[socket.socket] = []
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _accept(self):
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                self.conns.append(self.sock.accept()[0])
            except OSError:
                continue

    def __exit__(self, *exc):
        self.stop.set()
        for c in self.conns:
            c.close()
        self.sock.close()


def _failed_crawl(base: str, tmp_path, *extra: str) -> subprocess.CompletedProcess:
    feed = tmp_path / "feed.jsonl"
    feed.write_text(OLD_FEED, encoding="utf-8")
    cmd = crawl_cmd(base, tmp_path, *NO_RETRY, *extra, "-O", str(feed))
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("board", ["refused", "silent"])
def test_unreachable_board_fails_and_keeps_the_previous_feed(tmp_path, board):
    if board == "refused":
        base = f"http://127.0.0.1:{_closed_port()}"
        proc = _failed_crawl(base, tmp_path)
    else:
        with SilentServer() as base:
            proc = _failed_crawl(base, tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if "board unreachable" in ln]
    assert len(lines) == 1 and f"{base}/bbs/Beauty/index.html" in lines[0]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1].startswith("scrapy crawl: error: the crawl failed: board_unreachable")
    assert (tmp_path / "feed.jsonl").read_text(encoding="utf-8") == OLD_FEED  # -O did not truncate it
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # and left no temporary behind
    assert json.loads((tmp_path / "stats.json").read_text())["ptt/failed"] == "board_unreachable"


def test_misspelt_spider_argument_is_refused_with_the_known_names(tmp_path):
    with serve_mirror() as base:
        cmd = crawl_cmd(base, tmp_path, "-a", "keywrod=正妹", "-O", str(tmp_path / "feed.jsonl"), keyword=None)
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if "bad argument" in ln]
    assert len(lines) == 1 and "-a keywrod=" in lines[0] and "keyword" in lines[0].split("known:")[1]
    assert "Spider opened" not in proc.stderr and not (tmp_path / "feed.jsonl").exists()


def test_a_good_crawl_still_replaces_the_feed(tmp_path):
    feed = tmp_path / "feed.jsonl"
    feed.write_text(OLD_FEED, encoding="utf-8")
    with serve_mirror() as base:
        cmd = crawl_cmd(base, tmp_path, "-O", str(feed), start="2024-01-01", end="2024-01-10")
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    posts = read_feed(feed)
    assert posts and all(p["article_id"] != "yesterday" for p in posts)
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]

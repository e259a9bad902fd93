"""Crawl benchmark: parsing throughput on one core, and whole crawls of a generated board on loopback.

1. Parsing: article pages (and index pages) parsed per second by ``scrapy_ptt.parsing`` in this one process
   (one core), on pages rendered by the mirror and, when ``../shared/ptt_html`` exists, on the real pages.
2. Whole crawl: ``scrapy crawl ptt_beauty`` (a subprocess) against ``ptt-mirror --posts N`` (another subprocess),
   throttling off (no AutoThrottle, no delay, 16 concurrent requests), downloads off, for a board of N posts and
   of 10 N posts. Reports posts/s and the crawler's peak RSS (sampled every 50 ms with psutil).

Prints a table and writes ``bench_out/crawl.json``.

Example::

    python benchmarks/bench_crawl.py                 # 1,000 and 10,000 posts
    python benchmarks/bench_crawl.py --posts 200     # quicker: 200 and 2,000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import machine as _machine  # noqa: E402
from benchmarks._common import write_json  # noqa: E402
from scrapy_ptt.mirror import build_images, generate_board, load_board, render_article, render_index  # noqa: E402
from scrapy_ptt.parsing import parse_article, parse_index  # noqa: E402

SHARED = REPO.parent / "shared" / "ptt_html"


def machine() -> dict:
    return _machine(gpu="not used")


def rate(fn, pages: list[str], min_s: float = 2.0) -> tuple[float, int]:
    """Pages per second of fn over the pages, repeated for at least min_s."""
    n, t0 = 0, time.perf_counter()
    while True:
        for page in pages:
            fn(page)
        n += len(pages)
        elapsed = time.perf_counter() - t0
        if elapsed >= min_s:
            return n / elapsed, n


def bench_parsing() -> list[dict]:
    base = "http://127.0.0.1:1"
    board = load_board()
    articles = [render_article(board, p, base).decode() for p in board.posts if not p.get("deleted")]
    indexes = [render_index(board, n, base).decode() for n in range(1, board.pages + 1)]
    big = generate_board(400)
    indexes_20 = [render_index(big, n, base).decode() for n in range(1, big.pages + 1)]
    rows = [
        ("article", "mirror pages", articles, lambda h: parse_article(h, base)),
        ("index", "mirror pages, 5 rows", indexes, lambda h: parse_index(h, base)),
        ("index", "generated pages, 20 rows", indexes_20, lambda h: parse_index(h, base)),
    ]
    if SHARED.is_dir():
        real = [p.read_text(encoding="utf-8", errors="replace") for p in sorted(SHARED.glob("*M.*.html"))]
        typical = [h for h in real if len(h) < 60_000]
        rows.append(("article", f"real pages < 60 KB ({len(typical)})", typical, lambda h: parse_article(h)))
        rows.append(("article", f"all real pages ({len(real)}, incl. 357 KB)", real, lambda h: parse_article(h)))
        real_idx = [p.read_text(encoding="utf-8") for p in sorted(SHARED.glob("*index*.html"))]
        rows.append(("index", f"real pages ({len(real_idx)})", real_idx, lambda h: parse_index(h)))
    out = []
    for kind, corpus, pages, fn in rows:
        per_s, n = rate(fn, pages)
        kb = sum(len(p.encode()) for p in pages) / len(pages) / 1024
        out.append(
            {"kind": kind, "corpus": corpus, "pages_per_s": round(per_s, 1), "pages": n, "avg_kb": round(kb, 1)}
        )
    return out


def bench_crawl(n_posts: int, workdir: Path) -> dict:
    import psutil

    url_file = workdir / f"mirror-{n_posts}.url"
    mirror = subprocess.Popen(
        [sys.executable, "-m", "scrapy_ptt.mirror", "--port", "0", "--posts", str(n_posts),
         "--url-file", str(url_file)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not url_file.exists():
            if time.monotonic() > deadline or mirror.poll() is not None:
                raise RuntimeError("ptt-mirror did not start")
            time.sleep(0.1)
        base = url_file.read_text().strip()
        feed, stats = workdir / f"feed-{n_posts}.jsonl", workdir / f"stats-{n_posts}.json"
        cmd = [
            sys.executable, "-m", "scrapy", "crawl", "ptt_beauty", "-a", "start_date=2024-01-01",
            "-a", "end_date=2024-12-31", "-s", f"PTT_BASE_URL={base}", "-s", "AUTOTHROTTLE_ENABLED=False",
            "-s", "DOWNLOAD_DELAY=0", "-s", "CONCURRENT_REQUESTS=16", "-s", "CONCURRENT_REQUESTS_PER_DOMAIN=16",
            "-s", "LOG_LEVEL=WARNING", "-s", f"PTT_STATS_FILE={stats}", "-O", str(feed),
        ]  # fmt: skip
        t0 = time.perf_counter()
        crawl = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        proc, peak = psutil.Process(crawl.pid), 0
        while crawl.poll() is None:
            try:
                peak = max(peak, proc.memory_info().rss)
            except psutil.NoSuchProcess:
                break
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        err = crawl.stderr.read()
        if crawl.returncode != 0:
            raise RuntimeError(f"crawl failed: {err[-2000:]}")
        kept = sum(1 for _ in feed.open(encoding="utf-8"))
        s = json.loads(stats.read_text())
        return {
            "board_posts": n_posts,
            "index_pages": s.get("ptt/pages/index", 0),
            "posts_kept": kept,
            "wall_s": round(wall, 2),
            "posts_per_s": round(kept / wall, 1),
            "peak_rss_mib": round(peak / 2**20, 1),
        }
    finally:
        mirror.terminate()
        mirror.wait(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--posts", type=int, default=1000, help="size of the 1x board (the 10x board is 10 times it)")
    parser.add_argument("--out", type=Path, default=REPO / "bench_out" / "crawl.json")
    parser.add_argument("--skip-crawl", action="store_true", help="parsing figures only")
    args = parser.parse_args()
    build_images()  # warm the image cache so it is not timed
    result = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(), "command": " ".join(sys.argv)}
    result["parsing"] = bench_parsing()
    print(f"{'parse':8} {'corpus':42} {'pages/s':>9} {'avg KB':>7}")
    for r in result["parsing"]:
        print(f"{r['kind']:8} {r['corpus']:42} {r['pages_per_s']:9.1f} {r['avg_kb']:7.1f}")
    if not args.skip_crawl:
        with tempfile.TemporaryDirectory() as tmp:
            runs = [bench_crawl(n, Path(tmp)) for n in (args.posts, args.posts * 10)]
        base = runs[0]
        for r in runs:
            r["posts_per_s_ratio"] = round(r["posts_per_s"] / base["posts_per_s"], 2)
            r["peak_rss_ratio"] = round(r["peak_rss_mib"] / base["peak_rss_mib"], 2)
        result["crawl"] = runs
        head = ("board posts", "pages", "kept", "wall s", "posts/s", "peak RSS MiB", "x RSS")
        print("\n{:>11} {:>6} {:>7} {:>8} {:>8} {:>13} {:>6}".format(*head))
        for r in runs:
            print(
                f"{r['board_posts']:11d} {r['index_pages']:6d} {r['posts_kept']:7d} {r['wall_s']:8.1f} "
                f"{r['posts_per_s']:8.1f} {r['peak_rss_mib']:13.1f} {r['peak_rss_ratio']:6.2f}"
            )
    result["machine"]["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    print(
        f"\nload average (1 min) at start/end: {result['machine']['load_avg_1m_at_start']} / "
        f"{result['machine']['load_avg_1m_at_end']} on {result['machine']['cores']} cores"
    )
    print(f"\nwrote {write_json(args.out, result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

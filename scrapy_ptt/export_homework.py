"""The course-homework files, made from a crawl feed (no re-crawling): articles, popular articles, keyword images.

Formats (as the NYCU answer keys in ../shared/ptt_html have them):

- ``articles``: JSONL, one ``{"date": "MMDD", "title": <list title as on the board>, "url": ...}`` per post,
  oldest first (the title exactly as written: runs of blanks, ideographic and trailing spaces kept).
- ``popular``: the same for posts whose list push count is 爆 (``list_push == 100``).
- ``keyword``: one JSON ``{"image_urls": [...]}``: the image links (body, then pushes) of every post that matched
  the crawl's ``-a keyword=``, as written in the post (``http://`` kept, not normalised), oldest post first, each
  URL once.

Example::

    scrapy crawl ptt_beauty -a start_date=2024-01-01 -a end_date=2024-12-31 -a keyword=正妹 -O feed.jsonl
    python -m scrapy_ptt.export_homework articles feed.jsonl -o articles.jsonl
    python -m scrapy_ptt.export_homework popular feed.jsonl -o popular_articles.jsonl
    python -m scrapy_ptt.export_homework keyword feed.jsonl --start-date 2024-05-01 --end-date 2024-05-31 \\
        -o keyword_0501_0531.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from datetime import date, datetime
from pathlib import Path

from common.fileio import atomic_write, disk_error_line, os_error_line
from scrapy_ptt.items import FeedError, read_posts


def read_feed(path: Path) -> list[dict]:
    """The feed's posts sorted by time (``published_at``, then id), as the homework files list them."""
    return sorted(
        read_posts(path, require=("article_id", "published_at")), key=lambda r: (r["published_at"], r["article_id"])
    )


def in_dates(posts: Iterable[dict], start: date | None, end: date | None) -> list[dict]:
    def day(rec: dict) -> date:
        return datetime.fromisoformat(rec["published_at"]).date()  # already Asia/Taipei (+08:00)

    return [r for r in posts if (start is None or day(r) >= start) and (end is None or day(r) <= end)]


def article_lines(posts: Iterable[dict]) -> list[dict]:
    """The answer keys' titles are the board's text as written: ``list_title_raw`` (older feeds: ``list_title``)."""
    return [{"date": r["date"], "title": r.get("list_title_raw", r["list_title"]), "url": r["url"]} for r in posts]


def popular_lines(posts: Iterable[dict]) -> list[dict]:
    return article_lines(r for r in posts if r.get("list_push", 0) >= 100)


def keyword_images(posts: list[dict], source: Path) -> dict:
    if posts and not any(r.get("keyword") for r in posts):
        raise FeedError(f"{source}: crawled without a keyword; re-crawl with `-a keyword=正妹` (or your keyword)")
    # The answer keys hold the links as posted (``image_urls_raw``); older feeds only have the normalised ones.
    urls = [u for r in posts if r.get("keyword_match") for u in r.get("image_urls_raw", r.get("image_urls", []))]
    return {"image_urls": list(dict.fromkeys(urls))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ptt-homework", description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=["articles", "popular", "keyword"])
    parser.add_argument("feed", type=Path, help="JSONL feed from `scrapy crawl ptt_beauty -O feed.jsonl`")
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("--start-date", type=date.fromisoformat, help="YYYY-MM-DD, Asia/Taipei, inclusive")
    parser.add_argument("--end-date", type=date.fromisoformat, help="YYYY-MM-DD, Asia/Taipei, inclusive")
    args = parser.parse_args(argv)
    try:
        if args.start_date and args.end_date and args.end_date < args.start_date:
            raise FeedError(f"--end-date {args.end_date} is before --start-date {args.start_date}; swap them")
        posts = in_dates(read_feed(args.feed), args.start_date, args.end_date)
        if args.kind == "keyword":
            data = keyword_images(posts, args.feed)
            atomic_write(args.out, json.dumps(data, ensure_ascii=False, indent=2) + "\n")
            count = len(data["image_urls"])
        else:
            lines = article_lines(posts) if args.kind == "articles" else popular_lines(posts)
            atomic_write(args.out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines))
            count = len(lines)
    except FeedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # -o into a folder that is a file, read-only, or a full disk
        print(f"error: {disk_error_line(exc, args.out) or os_error_line(exc, args.out, '-o')}", file=sys.stderr)
        return 2
    print(f"{args.kind}: {count} {'image URLs' if args.kind == 'keyword' else 'posts'} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Split the feed by month with Scrapy's own feed options: one ``FEEDS`` entry per month, each with an
``item_filter`` that accepts only that month's posts (by ``published_at``, Asia/Taipei).

Either let the spider add the entries for every month in the crawl's range::

    scrapy crawl ptt_beauty -a start_date=2024-01-01 -a end_date=2024-03-31 \\
        -s PTT_FEED_BY_MONTH='feeds/%(name)s-%(month)s.jsonl'
    # -> feeds/ptt_beauty-2024-01.jsonl, feeds/ptt_beauty-2024-02.jsonl, feeds/ptt_beauty-2024-03.jsonl

or write the ``FEEDS`` setting yourself (``month`` is our feed option, read by the filter)::

    -s 'FEEDS={"jan.jsonl": {"format": "jsonlines", "month": "2024-01",
                             "item_filter": "scrapy_ptt.feeds.MonthFilter"}}'

``%(month)s`` is filled in by us; other ``%(...)s`` parameters (``%(name)s``, ``%(time)s``, any spider attribute)
by Scrapy, as for any feed URI. It combines with ``-O feed.jsonl`` (the whole range in one file as well). A fresh
crawl overwrites the month files; a resumed ``-s JOBDIR=...`` crawl appends to them (use ``-o``, not ``-O``, for the
whole-range feed then too).

Every file feed (``-O``, ``-o``, the month files) goes through :class:`KeepOnFailureFileStorage`: ``-O`` writes a
temporary file beside the feed and replaces the old feed only when the crawl ends without a failure (the spider
sets the ``ptt/failed`` stat when the board is unreachable or 404), so a dead board never truncates yesterday's
feed. ``-o`` appends to the file itself, as Scrapy does.
"""

from __future__ import annotations

import logging
import os
import secrets
from datetime import date
from pathlib import Path

from scrapy.extensions.feedexport import FileFeedStorage, ItemFilter

from common.fileio import fsync_dir

logger = logging.getLogger(__name__)
FAILED_STAT = "ptt/failed"  # the spider's failure stat (scrapy_ptt.spiders.ptt_beauty sets it)


class KeepOnFailureFileStorage(FileFeedStorage):
    """Scrapy's file storage, but ``-O`` (overwrite) writes beside the feed and swaps it in only on success."""

    def __init__(self, uri, *, feed_options=None, crawler=None):
        super().__init__(uri, feed_options=feed_options)
        self.crawler = crawler
        self._tmp: Path | None = None

    @classmethod
    def from_crawler(cls, crawler, uri, *, feed_options=None):
        return cls(uri, feed_options=feed_options, crawler=crawler)

    def open(self, spider):
        if self.write_mode != "wb":
            return super().open(spider)
        path = Path(self.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # the name common.fileio.clean_stale_temps recognises, so a killed crawl's temporary is cleaned later
        self._tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        return self._tmp.open("wb")

    def store(self, file):
        file.close()
        if self._tmp is None:
            return None
        tmp, self._tmp = self._tmp, None
        failed = self.crawler.stats.get_value(FAILED_STAT) if self.crawler is not None else None
        if failed:
            tmp.unlink(missing_ok=True)
            logger.warning("%s: not written (%s); the feed from before is kept", self.path, failed)
            return None
        os.replace(tmp, self.path)
        fsync_dir(Path(self.path).parent)
        return None


class MonthFilter(ItemFilter):
    """Accepts feed records whose ``published_at`` falls in the feed option ``month`` (``YYYY-MM``)."""

    def __init__(self, feed_options):
        super().__init__(feed_options)
        self.month = str((feed_options or {}).get("month") or "")
        if len(self.month) != 7 or self.month[4] != "-":
            raise ValueError(f"feed option month={self.month!r}: write it as YYYY-MM, e.g. 2024-01")

    def accepts(self, item) -> bool:
        published = item.get("published_at") if isinstance(item, dict) else getattr(item, "published_at", None)
        return str(published or "")[:7] == self.month


def months_between(start: date, end: date) -> list[str]:
    out, y, m = [], start.year, start.month
    while (y, m) <= (end.year, end.month):
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def month_feeds(uri_template: str, start: date, end: date, *, overwrite: bool = True) -> dict[str, dict]:
    """FEEDS entries, one per month of [start, end]; the URI must contain ``%(month)s``. ``overwrite=False``
    appends (a resumed ``JOBDIR`` crawl)."""
    if "%(month)s" not in uri_template:
        raise ValueError(
            f"PTT_FEED_BY_MONTH={uri_template!r} needs %(month)s in it, e.g. feeds/%(name)s-%(month)s.jsonl"
        )
    return {
        uri_template.replace("%(month)s", month): {
            "format": "jsonlines",
            "encoding": "utf-8",
            "overwrite": overwrite,
            "item_filter": "scrapy_ptt.feeds.MonthFilter",
            "month": month,
        }
        for month in months_between(start, end)
    }

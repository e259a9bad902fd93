"""``scrapy crawl`` that checks ``ptt_beauty``'s ``-a``/``-s`` arguments before Scrapy starts its engine.

A bad argument raised inside the spider's constructor surfaces as an asyncio "Task exception was never retrieved"
traceback; checked here, it is one ``scrapy: error: bad argument: ...`` line and exit status 2 (an ``-a`` name the
spider does not read, e.g. ``-a keywrod=``, too). A board that answers 404 (a misspelt ``-a board=``) closes the
crawl with reason ``board_not_found``, one that never answers (DNS, refused, timeouts after the retries) with
``board_unreachable``: exit status 1, and ``-O`` feeds written before are kept
(``scrapy_ptt.feeds.KeepOnFailureFileStorage``).

Example::

    scrapy crawl ptt_beauty -a start_date=2024-13-01 -a end_date=2024-12-31 -O feed.jsonl
    # scrapy crawl: error: bad argument: -a start_date='2024-13-01' is not a date; write it as YYYY-MM-DD, ...
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from scrapy.commands.crawl import Command as ScrapyCrawl
from scrapy.exceptions import UsageError

from scrapy_ptt.feeds import month_feeds
from scrapy_ptt.spiders.ptt_beauty import (
    BOARD_NOT_FOUND,
    BOARD_UNREACHABLE,
    PttBeautySpider,
    check_arg_names,
    check_args,
    check_base_url,
)


def check_writable_folder(option: str, folder: Path) -> None:
    """UsageError unless ``folder`` is (or can be made) a folder this process can write in."""
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{option}: {folder} is a file, not a folder; pass a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UsageError(
            f"{option}: {exc.filename or folder}: {exc.strerror or exc}; pass a writable folder"
        ) from None


def check_output_folders(settings) -> None:
    """JOBDIR, IMAGES_STORE and the folders of local feed files, checked before the engine starts (a file or a
    read-only folder there otherwise ends in an asyncio traceback, or in every image failing one by one)."""
    for key in ("JOBDIR", "IMAGES_STORE", "FILES_STORE"):
        if value := settings.get(key):
            if "://" not in str(value):
                check_writable_folder(f"-s {key}={value}", Path(value))
    for uri in settings.getdict("FEEDS"):
        uri = str(uri)
        if uri.startswith("file://"):
            uri = uri[len("file://") :]
        elif "://" in uri or uri.startswith("stdout:"):
            continue
        path = Path(uri)
        if "%(" in uri:  # a URI template (%(name)s, %(month)s): only its fixed leading folders can be checked
            fixed = [part for part in path.parent.parts if "%(" not in part]
            path = Path(*fixed) / "x" if fixed else None
        if path is None:
            continue
        if path.is_dir():
            raise UsageError(f"feed {uri}: is a folder; give a file path (e.g. {uri.rstrip(os.sep)}/feed.jsonl)")
        check_writable_folder(f"feed {uri}", path.parent if str(path.parent) else Path("."))


class Command(ScrapyCrawl):
    def run(self, args, opts) -> None:
        if args and args[0] == PttBeautySpider.name:
            spargs = opts.spargs or {}
            try:
                check_arg_names(spargs)
                start, end = check_args(
                    spargs.get("start_date"), spargs.get("end_date"), spargs.get("board", "Beauty")
                )
                check_base_url(self.settings.get("PTT_BASE_URL"))
                check_output_folders(self.settings)
                if template := self.settings.get("PTT_FEED_BY_MONTH"):
                    try:
                        month_feeds(template, start, end)
                    except ValueError as exc:
                        raise UsageError(f"-s {exc}") from None
            except UsageError as exc:  # one line (Scrapy's own UsageError also prints its usage block)
                print(f"scrapy crawl: error: bad argument: {exc}", file=sys.stderr)
                self.exitcode = 2
                return
        super().run(args, opts)
        crawler = getattr(self, "_ptt_crawler", None)
        reason = crawler.stats.get_value("finish_reason") if crawler is not None else None
        if reason in (BOARD_NOT_FOUND, BOARD_UNREACHABLE):
            self.exitcode = 1
            kept = " (the feed files from before are kept)" if self.settings.getdict("FEEDS") else ""
            print(f"scrapy crawl: error: the crawl failed: {reason}{kept}; see the error above", file=sys.stderr)

    def _create_crawler(self, spidercls):
        self._ptt_crawler = super()._create_crawler(spidercls)
        return self._ptt_crawler

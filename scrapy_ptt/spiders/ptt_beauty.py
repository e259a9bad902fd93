"""``ptt_beauty``: every post of a PTT board in a date range, with its image links (and images, if asked).

How it walks the board:

1. ``index.html`` (the newest page) gives the page count N (its 上頁 link is ``index<N-1>.html``).
2. If the newest page already reaches back to ``end_date``, the walk starts there; otherwise a binary search over
   ``index1..index<N-1>.html`` finds the newest page whose oldest post is not after ``end_date``.
3. From there it walks 上頁 (older) pages, requesting each in-range article, and stops after the first page whose
   oldest post is before ``start_date`` (every older page is then wholly before the range).

Dates come from each article's own id ``M.<unix>.A.<hex>`` in Asia/Taipei, both ends inclusive. Every request
carries the ``over18=1`` cookie; if the ``/ask/over18`` gate comes back anyway, the spider submits the gate's form
(``yes=yes``) and goes on (at most 3 times per page). Skipped and counted in the crawl stats
(``ptt/posts/skipped/<reason>``): ``pinned`` (rows after ``r-list-sep``), ``deleted`` (rows without a link),
``announcement`` (``[公告]``, ``Fw: [公告]``, ``Re: [公告]``), ``empty_title``, ``not_found`` (404 articles) and
``not_html`` (a non-page answer). Deleted rows carry no date, so they are counted on every index page walked,
even at the range's edges.
Other stats: ``ptt/pages/index``, ``ptt/pages/probe`` (binary-search fetches), ``ptt/posts/kept``,
``ptt/posts/out_of_range``, ``ptt/gate_passed``. ``-s PTT_STATS_FILE=stats.json`` also writes them (and Scrapy's
own counters) as JSON when the crawl ends. ``-s PTT_FEED_BY_MONTH=feeds/%(name)s-%(month)s.jsonl`` splits the
feed by month (see ``scrapy_ptt.feeds``).

Arguments (``-a``): ``start_date`` and ``end_date`` (``YYYY-MM-DD``, required), ``keyword`` (optional, matched in
the list title, the article title and the body before ``※ 發信站``), ``board`` (default ``Beauty``).

Example::

    scrapy crawl ptt_beauty -a start_date=2024-01-01 -a end_date=2024-01-31 -a keyword=正妹 \\
        -s PTT_BASE_URL=http://127.0.0.1:PORT -s IMAGES_STORE=images -s PTT_ALLOW_PRIVATE_HOSTS=True -O feed.jsonl
"""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit

import scrapy
from scrapy.exceptions import CloseSpider, UsageError
from scrapy.http import FormRequest, TextResponse
from scrapy.utils.defer import deferred_from_coro

from common.fileio import atomic_write
from scrapy_ptt.feeds import FAILED_STAT, month_feeds
from scrapy_ptt.items import PostItem
from scrapy_ptt.logfilter import quiet_download_tracebacks
from scrapy_ptt.parsing import (
    index_number,
    is_announcement,
    is_not_found,
    is_over18_gate,
    over18_target,
    parse_article,
    parse_index,
    published_at,
    taipei_day_bounds,
)

BOARD_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{1,29}")
MAX_GATE_PASSES = 3
BOARD_NOT_FOUND = "board_not_found"  # the close reason (and a non-zero exit of `scrapy crawl`)
BOARD_UNREACHABLE = "board_unreachable"  # the newest index page never answered: DNS, refused, timed out
SPIDER_ARGS = ("start_date", "end_date", "keyword", "board")  # every -a the spider reads
ARTICLE_PRIORITY = 10


def parse_date_arg(name: str, value: str | None) -> date:
    if not value:
        raise UsageError(f"-a {name}=YYYY-MM-DD is required (e.g. -a {name}=2024-01-01)")
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise UsageError(f"-a {name}={value!r} is not a date; write it as YYYY-MM-DD, e.g. 2024-01-31") from None


def check_args(start_date, end_date, board="Beauty") -> tuple[date, date]:
    """The parsed ``-a start_date``/``end_date``; UsageError naming the argument when one is wrong."""
    start, end = parse_date_arg("start_date", start_date), parse_date_arg("end_date", end_date)
    if end < start:
        raise UsageError(f"-a end_date={end_date} is before -a start_date={start_date}; swap them")
    if not BOARD_RE.fullmatch(board or ""):
        raise UsageError(f"-a board={board!r} is not a PTT board name (letters, digits, _ or -; e.g. Beauty)")
    return start, end


def check_arg_names(spargs) -> None:
    """UsageError for a ``-a`` name the spider does not read (``-a keywrod=...`` would otherwise be ignored)."""
    unknown = sorted(set(spargs) - set(SPIDER_ARGS) - {"_job"})  # _job: scrapyd's job id
    if unknown:
        raise UsageError(f"-a {unknown[0]}=... is not an argument of ptt_beauty; known: {', '.join(SPIDER_ARGS)}")


def check_base_url(value) -> str:
    """``PTT_BASE_URL`` without its trailing slash; UsageError when it is not an http(s) URL."""
    base = (value or "").rstrip("/")
    if urlsplit(base).scheme not in ("http", "https") or not urlsplit(base).netloc:
        raise UsageError(f"-s PTT_BASE_URL={base!r} is not an http(s) URL, e.g. https://www.ptt.cc")
    return base


class PttBeautySpider(scrapy.Spider):
    name = "ptt_beauty"
    handle_httpstatus_list = [404]  # a deleted article is counted, not retried or dropped silently

    def __init__(self, start_date=None, end_date=None, keyword=None, board="Beauty", *args, **kwargs):
        super().__init__(*args, **kwargs)
        try:
            check_arg_names(kwargs)
            self.start_date, self.end_date = check_args(start_date, end_date, board)
        except UsageError as exc:
            self.logger.error("bad argument: %s", exc)  # `scrapy crawl` checks first (scrapy_ptt.commands.crawl)
            raise
        self.board = board
        self.keyword = (keyword or "").strip() or None
        self.lo_ts, self.hi_ts = taipei_day_bounds(self.start_date, self.end_date)

    @classmethod
    def from_crawler(cls, crawler, *args, **kwargs):
        spider = super().from_crawler(crawler, *args, **kwargs)
        try:
            base = check_base_url(crawler.settings.get("PTT_BASE_URL"))
        except UsageError as exc:
            spider.logger.error("bad argument: %s", exc)
            raise
        spider.base_url = base
        quiet_download_tracebacks()
        spider.imgur_base = crawler.settings.get("PTT_IMGUR_BASE") or "https://i.imgur.com"
        spider.max_index_pages = crawler.settings.getint("PTT_MAX_INDEX_PAGES")
        jobdir = crawler.settings.get("JOBDIR")
        resuming = bool(jobdir) and (Path(jobdir) / "requests.seen").exists()
        if resuming:
            for uri, opts in crawler.settings.getdict("FEEDS").items():
                if opts.get("overwrite"):
                    spider.logger.warning(
                        "resuming %s with -O %s: that truncates the posts written before the pause; use -o to append",
                        jobdir,
                        uri,
                    )
        if template := crawler.settings.get("PTT_FEED_BY_MONTH"):
            try:
                # a resumed crawl appends to the month files, so the posts written before the pause stay
                monthly = month_feeds(template, spider.start_date, spider.end_date, overwrite=not resuming)
            except ValueError as exc:
                raise UsageError(f"-s {exc}") from None
            feeds = {**crawler.settings.getdict("FEEDS"), **monthly}
            crawler.settings.set("FEEDS", feeds, priority=max(crawler.settings.getpriority("FEEDS") or 0, 30))
        return spider

    # ------------------------------------------------------------ requests

    def _request(self, url, callback, *, dont_filter=False, priority=0, **meta):
        return scrapy.Request(
            url, callback=callback, cookies={"over18": "1"}, meta=meta, dont_filter=dont_filter, priority=priority
        )

    def _index_url(self, n: int | None = None) -> str:
        return f"{self.base_url}/bbs/{self.board}/index{n if n else ''}.html"

    def _pass_gate(self, response):
        """A form submission through the over18 gate, or None when the response is not the gate."""
        if not is_over18_gate(_html(response), response.url):
            return None
        passes = response.meta.get("gate_passes", 0)
        if passes >= MAX_GATE_PASSES:
            self.logger.error("over18 gate keeps coming back for %s; giving up on it", response.url)
            self.crawler.stats.inc_value("ptt/gate_failed")
            return False
        self.crawler.stats.inc_value("ptt/gate_passed")
        meta = {k: v for k, v in response.meta.items() if k in ("row", "search", "gate_passes", "page_no")}
        meta["gate_passes"] = passes + 1
        form = response.css("form[action*='over18']")
        action = response.urljoin(form.attrib.get("action", "/ask/over18")) if form else f"{self.base_url}/ask/over18"
        data = {i.attrib["name"]: i.attrib.get("value", "") for i in form.css("input[type=hidden][name]")}
        data.setdefault("from", over18_target(response.url) or urlsplit(response.request.url).path)
        data["yes"] = "yes"  # the form's 同意 (agree) button
        return FormRequest(action, formdata=data, callback=response.request.callback, meta=meta, dont_filter=True)

    async def start(self):
        request = self._request(self._index_url(), self.parse_newest)
        yield request.replace(errback=self.board_unreachable)

    def board_unreachable(self, failure):
        """The newest index page failed after Scrapy's retries: one line naming it, and a failed crawl."""
        url = failure.request.url if hasattr(failure, "request") else self._index_url()
        error = str(failure.value).rstrip(". ") or type(failure.value).__name__
        self.logger.error("board unreachable: %s: %s; check PTT_BASE_URL and the network", url, error)
        self.crawler.stats.set_value(FAILED_STAT, BOARD_UNREACHABLE)
        # closed here rather than by raising CloseSpider: an errback that raises makes Scrapy log a traceback
        deferred_from_coro(self.crawler.engine.close_spider_async(reason=BOARD_UNREACHABLE))

    # ------------------------------------------------------------ index pages

    def parse_newest(self, response):
        if (gate := self._pass_gate(response)) is not None:
            yield from [gate] if gate else []
            return
        if response.status == 404 or is_not_found(_html(response)):
            # a misspelt board answers 404: say so instead of finishing with an empty feed
            self.logger.error("bad argument: -a board=%s: %s is 404; check its spelling", self.board, response.url)
            self.crawler.stats.set_value(FAILED_STAT, BOARD_NOT_FOUND)
            raise CloseSpider(BOARD_NOT_FOUND)
        page = parse_index(_html(response), response.url)
        newest = (index_number(page.prev_url) or 0) + 1
        stamps = page.timestamps()
        if not stamps or min(stamps) <= self.hi_ts or newest == 1:
            yield from self._walk(page, newest)
        else:
            yield from self._probe_or_walk(lo=1, hi=newest - 1, best=None)

    def _probe_or_walk(self, lo: int, hi: int, best: int | None):
        if lo > hi:
            if best is None:
                self.logger.info("no index page reaches back to %s: nothing in range", self.end_date)
            else:
                yield self._request(self._index_url(best), self.parse_index_page)
            return
        mid = (lo + hi) // 2
        search = {"lo": lo, "hi": hi, "best": best, "mid": mid}
        yield self._request(self._index_url(mid), self.parse_probe, dont_filter=True, search=search)

    def parse_probe(self, response):
        """Binary search step: the newest page whose oldest post is not after end_date."""
        if (gate := self._pass_gate(response)) is not None:
            yield from [gate] if gate else []
            return
        self.crawler.stats.inc_value("ptt/pages/probe")
        s = response.meta["search"]
        stamps = parse_index(_html(response), response.url).timestamps()
        if not stamps or min(stamps) <= self.hi_ts:  # pages without posts count as reachable: walking costs a page
            yield from self._probe_or_walk(s["mid"] + 1, s["hi"], s["mid"])
        else:
            yield from self._probe_or_walk(s["lo"], s["mid"] - 1, s["best"])

    def parse_index_page(self, response):
        if (gate := self._pass_gate(response)) is not None:
            yield from [gate] if gate else []
            return
        yield from self._walk(parse_index(_html(response), response.url), index_number(response.url))

    def _walk(self, page, number: int | None):
        stats = self.crawler.stats
        stats.inc_value("ptt/pages/index")
        for row in page.rows:
            reason = self._skip_reason(row)
            if reason == "out_of_range":
                stats.inc_value("ptt/posts/out_of_range")
            elif reason:
                stats.inc_value(f"ptt/posts/skipped/{reason}")
            else:
                # Articles before the next index page: the queue then holds about one page of requests,
                # so memory stays flat however long the walk is.
                yield self._request(row.url, self.parse_post, priority=ARTICLE_PRIORITY, row=_row_meta(row))
        stamps = page.timestamps()
        walked = stats.get_value("ptt/pages/index", 0)
        if self.max_index_pages and walked >= self.max_index_pages:
            self.logger.warning("PTT_MAX_INDEX_PAGES=%d reached; stopping the walk", self.max_index_pages)
        elif page.prev_url and (not stamps or min(stamps) >= self.lo_ts):
            yield self._request(page.prev_url, self.parse_index_page)

    def _skip_reason(self, row) -> str | None:
        if row.pinned:
            return "pinned"
        if row.deleted or row.article_id is None:
            return "deleted"
        if not self.lo_ts <= row.timestamp <= self.hi_ts:
            return "out_of_range"
        if is_announcement(row.title):
            return "announcement"
        if not row.title.strip():
            return "empty_title"
        return None

    # ------------------------------------------------------------ articles

    def parse_post(self, response):
        if (gate := self._pass_gate(response)) is not None:
            yield from [gate] if gate else []
            return
        row, html = response.meta["row"], _html(response)
        if response.status == 404 or is_not_found(html):
            self.crawler.stats.inc_value("ptt/posts/skipped/not_found")
            return
        if not html.strip():
            self.crawler.stats.inc_value("ptt/posts/skipped/not_html")
            return
        art = parse_article(html, self.base_url, self.imgur_base)
        for problem in art.parse_problems:  # libxml2's limits: the page after that point is not in the tree
            self.crawler.stats.inc_value("ptt/posts/parse_limit")
            self.logger.warning("%s: %s; the body and images after that point are missing", response.url, problem)
        if art.bad_image_urls:
            self.crawler.stats.inc_value("ptt/links/malformed", len(art.bad_image_urls))
            self.logger.warning("%s: malformed image links %s (recorded as bad_url)", response.url, art.bad_image_urls)
        when = published_at(row["article_id"])
        match = []
        if self.keyword:
            if self.keyword in row["title"] or self.keyword in (art.title or ""):
                match.append("title")
            if self.keyword in art.body:
                match.append("body")
        self.crawler.stats.inc_value("ptt/posts/kept")
        yield PostItem(
            article_id=row["article_id"],
            url=row["url"],
            board=_board_of(row["url"]) or self.board,
            list_title=row["title"],
            list_title_raw=row.get("title_raw"),
            title=art.title,
            author=art.author,
            date=when.strftime("%m%d"),
            published_at=when.isoformat(),
            list_push=row["push"],
            pushes=art.pushes,
            keyword=self.keyword,
            keyword_match=match,
            image_urls=art.image_urls,
            image_urls_raw=art.image_urls_raw,
            bad_image_urls=art.bad_image_urls,
        )

    def closed(self, reason):
        stats = self.crawler.stats.get_stats()
        skipped = {k.rsplit("/", 1)[1]: v for k, v in stats.items() if k.startswith("ptt/posts/skipped/")}
        failed = {k.rsplit("/", 1)[1]: v for k, v in stats.items() if k.startswith("ptt/images/failed/")}
        self.logger.info(
            "ptt_beauty %s..%s (%s): index pages %d (+%d probes), posts kept %d, skipped %s, images ok %d, failed %s",
            self.start_date,
            self.end_date,
            reason,
            stats.get("ptt/pages/index", 0),
            stats.get("ptt/pages/probe", 0),
            stats.get("ptt/posts/kept", 0),
            skipped or "{}",
            stats.get("ptt/images/ok", 0),
            failed or "{}",
        )
        if path := self.crawler.settings.get("PTT_STATS_FILE"):
            data = {k: v for k, v in stats.items() if isinstance(v, int | float | str)}
            atomic_write(Path(path), json.dumps(data, ensure_ascii=False, indent=1, sort_keys=True))


def _html(response) -> str:
    """The page's text; '' for a non-text answer (an image or a binary where a page should be), parsed as empty."""
    return response.text if isinstance(response, TextResponse) else ""


def _row_meta(row) -> dict:
    """The index row as plain data (request meta must pickle for JOBDIR)."""
    return {
        "article_id": row.article_id,
        "url": row.url,
        "title": row.title,
        "title_raw": row.title_raw,
        "push": row.push,
    }


def _board_of(url: str) -> str | None:
    m = re.search(r"/bbs/([^/]+)/", url or "")
    return m.group(1) if m else None


__all__ = ["PttBeautySpider", "check_arg_names", "check_args", "check_base_url"]

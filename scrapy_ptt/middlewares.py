"""Downloader middlewares: back off before a 429 or 5xx is retried; refuse image fetches to private addresses.

Scrapy's RetryMiddleware re-queues a 429/5xx at once; this middleware (placed before it on the response path)
first waits ``Retry-After`` seconds when the server sends that header, else ``PTT_BACKOFF_BASE_S * 2**n`` for the
n-th retry of the request, capped at ``PTT_BACKOFF_MAX_S``. The wait holds the request's download slot, so the
site as a whole is asked less often meanwhile, not just that one URL. Stats: ``ptt/backoff/count``,
``ptt/backoff/seconds``. Only responses that RetryMiddleware will retry are delayed.

Example (settings.py)::

    DOWNLOADER_MIDDLEWARES = {
        "scrapy_ptt.middlewares.BackoffMiddleware": 560,  # responses reach it before RetryMiddleware (550)
        "scrapy_ptt.middlewares.PrivateHostGuardMiddleware": 50,  # requests: first, also for redirect targets
    }
"""

from __future__ import annotations

import asyncio

from scrapy.exceptions import IgnoreRequest
from scrapy.utils.defer import maybe_deferred_to_future
from twisted.internet.task import deferLater

from scrapy_ptt.netguard import resolve_block_reason, url_host, url_literal_block_reason


def backoff_seconds(retry_after: bytes | str | None, retries_so_far: int, *, base_s: float, max_s: float) -> float:
    """Seconds to wait: the Retry-After header (delta-seconds form) if valid, else exponential; capped."""
    if retry_after is not None:
        text = retry_after.decode("latin-1") if isinstance(retry_after, bytes) else retry_after
        try:
            return max(0.0, min(float(text.strip()), max_s))
        except ValueError:
            pass  # an HTTP date, or junk: fall back to our own schedule
    return min(base_s * (2**retries_so_far), max_s)


class BackoffMiddleware:
    def __init__(self, crawler):
        s = crawler.settings
        self.crawler = crawler
        self.codes = {int(c) for c in s.getlist("RETRY_HTTP_CODES")}
        self.max_retries = s.getint("RETRY_TIMES")
        self.enabled = s.getbool("RETRY_ENABLED")
        self.base_s = s.getfloat("PTT_BACKOFF_BASE_S", 1.0)
        self.max_s = s.getfloat("PTT_BACKOFF_MAX_S", 60.0)

    @classmethod
    def from_crawler(cls, crawler):
        return cls(crawler)

    async def process_response(self, request, response):
        retries = request.meta.get("retry_times", 0)
        if (
            not self.enabled
            or response.status not in self.codes
            or request.meta.get("dont_retry")
            or retries >= request.meta.get("max_retry_times", self.max_retries)
        ):
            return response
        wait = backoff_seconds(response.headers.get(b"Retry-After"), retries, base_s=self.base_s, max_s=self.max_s)
        if wait > 0:
            self.crawler.stats.inc_value("ptt/backoff/count")
            self.crawler.stats.inc_value("ptt/backoff/seconds", wait)
            from twisted.internet import reactor  # the installed one; importing it at module level would install one

            await maybe_deferred_to_future(deferLater(reactor, wait, lambda: None))
        return response


class PrivateHostBlocked(IgnoreRequest):
    """An image request (or a redirect it followed) aimed at a loopback/private/link-local/multicast address."""


class PrivateHostGuardMiddleware:
    """Re-checks every image request at download time, so a redirect from a public host to a private address
    (``http://example.com/a.jpg`` -> ``302 http://127.0.0.1/...``) is refused too; the pipeline's own check only
    sees the URL in the post. Applies to requests with ``meta["ptt_guard_host"]``; off when
    ``PTT_ALLOW_PRIVATE_HOSTS`` is true.

    Literal addresses and localhost names are refused here. A host name is judged where it is connected to, by
    ``scrapy_ptt.resolver.GuardedResolver`` (so a name that re-resolves differently is caught); only names that
    resolver trusts (``PTT_BASE_URL``'s host), or every name when another resolver is installed or a proxy is set
    in the environment, are looked up here, and anything but a clean answer (``dns_error`` too) is refused: fail
    closed.
    """

    def __init__(self, crawler):
        self.crawler = crawler
        from urllib.request import getproxies

        self.allow_private = crawler.settings.getbool("PTT_ALLOW_PRIVATE_HOSTS")
        self.proxied = bool(getproxies())  # through a proxy the resolver never sees the image host: judge it here
        self._verdicts: dict[str, str | None] = {}

    @classmethod
    def from_crawler(cls, crawler):
        return cls(crawler)

    async def process_request(self, request):
        if self.allow_private or not request.meta.get("ptt_guard_host"):
            return None
        from scrapy_ptt.resolver import installed_guard

        host = url_host(request.url)
        reason = url_literal_block_reason(request.url)
        guard = installed_guard()
        if reason is None and host is not None and (guard is None or guard.is_trusted(host) or self.proxied):
            if host not in self._verdicts:
                if guard is not None:
                    verdict = await maybe_deferred_to_future(guard.block_reason(host, trusting=False))
                else:  # the project's asyncio reactor: a thread of asyncio's pool, off the event loop
                    verdict = await asyncio.to_thread(resolve_block_reason, request.url)
                self._verdicts[host] = verdict
            reason = self._verdicts[host]
        if reason is not None:
            self.crawler.stats.inc_value("ptt/images/blocked_at_download")
            raise PrivateHostBlocked(f"{reason}: {request.url}")
        return None

    def process_exception(self, request, exception):
        """A connection the resolver refused (its lookup answered a private address) is a ``private_host``
        refusal of this request, redirect target included, not a DNS failure."""
        from scrapy.exceptions import CannotResolveHostError
        from twisted.internet.error import DNSLookupError

        from scrapy_ptt.resolver import installed_guard

        if not request.meta.get("ptt_guard_host") or not isinstance(
            exception, CannotResolveHostError | DNSLookupError
        ):
            return None
        guard = installed_guard()
        if guard is not None and guard.verdicts.get(url_host(request.url) or "") == "private_host":
            self.crawler.stats.inc_value("ptt/images/blocked_at_download")
            raise PrivateHostBlocked(f"private_host: {request.url}") from exception
        return None

"""Download errors as one log line: the error's text instead of a Twisted traceback.

Scrapy logs a failed download (connection refused, DNS failure, timeout) with its whole traceback, from the
scraper and from the robots.txt middleware; the traceback says nothing the error's own text does not. So does
tldextract (behind Scrapy's cookie middleware) when it cannot fetch the Public Suffix List on an offline machine's
first crawl (it then uses its bundled copy). This filter, installed by the spider on those loggers, keeps the
record and its level but puts the error's text at the end of the message and drops the traceback. Any other
exception keeps its traceback.

Example::

    from scrapy_ptt.logfilter import quiet_download_tracebacks
    quiet_download_tracebacks()   # idempotent
"""

from __future__ import annotations

import logging

from requests.exceptions import RequestException
from twisted.internet.error import ConnectError, DNSLookupError, TimeoutError
from twisted.web._newclient import ResponseFailed

try:  # Scrapy >= 2.14 wraps download errors in its own exception types
    from scrapy.exceptions import DownloadConnectionRefusedError, DownloadFailedError, DownloadTimeoutError

    _SCRAPY_ERRORS: tuple[type[BaseException], ...] = (
        DownloadConnectionRefusedError,
        DownloadFailedError,
        DownloadTimeoutError,
    )
except ImportError:  # pragma: no cover - older Scrapy
    _SCRAPY_ERRORS = ()

DOWNLOAD_ERRORS = (ConnectError, DNSLookupError, TimeoutError, ResponseFailed, RequestException, *_SCRAPY_ERRORS)
LOGGERS = ("scrapy.core.scraper", "scrapy.downloadermiddlewares.robotstxt", "tldextract")


class DownloadErrorLine(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, DOWNLOAD_ERRORS):
            message = record.getMessage()
            text = str(exc) or type(exc).__name__
            record.msg = message if text in message else f"{message}: {text}"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_download_tracebacks() -> None:
    for name in LOGGERS:
        log = logging.getLogger(name)
        if not any(isinstance(f, DownloadErrorLine) for f in log.filters):
            log.addFilter(DownloadErrorLine())

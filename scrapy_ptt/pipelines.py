"""Image downloads (Scrapy's media pipeline) and the feed-record shaper; contract 2 in docs/contracts.md.

Image store (this module owns it): ``IMAGES_STORE/full/<sha1 of the URL>.<ext>``, ``ext`` one of ``jpg png gif``,
the original bytes as served (no re-encoding). A feed record's ``images[].path`` is relative to ``IMAGES_STORE``.

``PttImagesPipeline`` is a ``FilesPipeline`` subclass, so Scrapy does the downloading: per-host concurrency and
delays, de-duplication by URL (an image linked by two posts is fetched once), retries, redirects (imgur sends
deleted images to ``removed.png``), and skipping files already in the store (``FILES_EXPIRES`` days). It is on
only when ``IMAGES_STORE`` is set. Per image it checks, and on failure records ``{url, reason}`` in
``image_failures`` (never failing the post):

``private_host`` (loopback/private/link-local/multicast address, unless ``PTT_ALLOW_PRIVATE_HOSTS``),
``dns_error``, ``http_<status>``, ``imgur_removed``, ``empty``, ``content_type`` (not ``image/*``),
``too_large`` (over ``PTT_IMAGE_MAX_BYTES``), ``decompression_bomb`` (over ``PTT_IMAGE_MAX_PIXELS``),
``decode_error`` (Pillow cannot decode it), ``format`` (not JPEG/PNG/GIF), ``filtered`` (robots.txt),
``redirect_loop`` (more redirects than ``REDIRECT_MAX_TIMES``), ``bad_url`` (a malformed link: ``http://[bad``,
a port ``:abc`` or ``:99999``), ``bad_host``, ``download_error`` (connection failures after retries); with the
optional download-time filter
(``-s PTT_FACE_FILTER=True``, ``-s PTT_MIN_BLUR_VAR=100``; the class named by ``PTT_PHOTO_FILTER``, by default
curation's ``curation.download_filter.PhotoFilter``) also ``no_face``, ``blurry``.

Crawl stats: ``ptt/images/ok`` and ``ptt/images/failed/<reason>``.

Example::

    scrapy crawl ptt_beauty -a start_date=2024-01-01 -a end_date=2024-01-31 -s IMAGES_STORE=images -O feed.jsonl
    # then: images/full/<sha1>.jpg, and in feed.jsonl "images": [{"url", "path": "full/<sha1>.jpg", ...}]
"""

from __future__ import annotations

import hashlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any

from itemadapter import ItemAdapter
from scrapy import Request
from scrapy.exceptions import CannotResolveHostError, IgnoreRequest, NotConfigured
from scrapy.http.request import NO_CALLBACK
from scrapy.pipelines.files import FilesPipeline, FSFilesStore
from scrapy.utils.defer import deferred_from_coro, maybe_deferred_to_future
from scrapy.utils.misc import load_object
from twisted.internet.defer import DeferredList
from twisted.internet.error import DNSLookupError
from twisted.internet.threads import deferToThread

from common.fileio import atomic_write, clean_stale_temps
from scrapy_ptt.items import PostItem
from scrapy_ptt.middlewares import PrivateHostBlocked
from scrapy_ptt.netguard import resolve_block_reason, url_host, url_literal_block_reason

log = logging.getLogger(__name__)

IMAGE_FORMATS = {"JPEG": "jpg", "PNG": "png", "GIF": "gif"}


try:  # Scrapy logs these at DEBUG without a traceback: a rejected image is expected, counted, not an error
    from scrapy.pipelines.media import _MediaRequestFiltered as _QuietMediaError
except ImportError:  # pragma: no cover - older Scrapy
    _QuietMediaError = Exception


class ImageRejected(_QuietMediaError):
    """An image that will not be stored; ``str(exc)`` is the reason recorded in ``image_failures``."""


def image_reject_reason(body: bytes, content_type: str, *, max_bytes: int, max_pixels: int) -> str | None:
    """Why these bytes are not an acceptable image, or None. Pure; decodes with Pillow (bomb guard on)."""
    from PIL import Image

    if not body:
        return "empty"
    if content_type and not content_type.lower().startswith("image/"):
        return "content_type"
    if len(body) > max_bytes:
        return "too_large"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(body)) as im:
                if im.width * im.height > max_pixels:
                    return "decompression_bomb"
                if im.format not in IMAGE_FORMATS:
                    return "format"
                im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return "decompression_bomb"
    except (OSError, ValueError, SyntaxError, EOFError):
        return "decode_error"
    return None


def failure_reason(exc: BaseException, url: str) -> str:
    """The ``image_failures`` reason for a download that raised ``exc`` (after Scrapy's retries)."""
    from scrapy_ptt.resolver import installed_guard

    text = str(exc).lower()
    if isinstance(exc, PrivateHostBlocked):  # "<reason>: <url>" from the guard middleware
        return str(exc).split(":", 1)[0] or "private_host"
    if isinstance(exc, IgnoreRequest):
        return "redirect_loop" if "redirect" in text else "filtered"  # else robots.txt or offsite
    if isinstance(exc, CannotResolveHostError | DNSLookupError):
        guard = installed_guard()
        verdict = guard.verdicts.get(url_host(url) or "") if guard is not None else None
        return verdict or "dns_error"  # private_host when the connection's own lookup answered a private address
    if "max size" in text or "maxsize" in text:  # Scrapy's "larger than download max size (N)"
        return "too_large"
    log.warning("image %s failed: %s: %s", url, type(exc).__name__, exc)
    return "download_error"


class AtomicFSFilesStore(FSFilesStore):
    """Scrapy's file store, writing each image to a temporary name and renaming it (``common.fileio.atomic_write``):
    a crawl killed mid-write leaves no cut-short ``full/<sha1>.jpg`` that a resumed crawl would take as stored."""

    def persist_file(self, path, buf, info, meta=None, headers=None) -> None:
        atomic_write(self._get_filesystem_path(path), buf.getvalue())


class PttImagesPipeline(FilesPipeline):
    FILES_URLS_FIELD = "image_urls"
    FILES_RESULT_FIELD = "images"
    STORE_SCHEMES = {**FilesPipeline.STORE_SCHEMES, "": AtomicFSFilesStore, "file": AtomicFSFilesStore}

    @classmethod
    def from_crawler(cls, crawler):
        settings = crawler.settings
        store = settings.get("IMAGES_STORE")
        if not store:
            raise NotConfigured  # IMAGES_STORE unset: downloads off (no message, so Scrapy does not warn)
        cls._update_stores(settings)
        if "://" not in str(store) or str(store).startswith("file://"):  # a crashed crawl's temporaries
            clean_stale_temps(Path(str(store).removeprefix("file://")) / "full")
        pipe = cls(store, crawler=crawler)
        pipe.allow_private = settings.getbool("PTT_ALLOW_PRIVATE_HOSTS")
        pipe.max_bytes = settings.getint("PTT_IMAGE_MAX_BYTES")
        pipe.max_pixels = settings.getint("PTT_IMAGE_MAX_PIXELS")
        pipe._host_verdicts = {}
        pipe.photo_filter = None
        if settings.getbool("PTT_FACE_FILTER") or settings.getfloat("PTT_MIN_BLUR_VAR") > 0:
            # A dotted path, the Scrapy way: the crawler names the filter and never imports a later stage itself.
            pipe.photo_filter = load_object(settings.get("PTT_PHOTO_FILTER")).from_settings(settings)
        return pipe

    async def process_item(self, item: Any) -> Any:
        adapter = ItemAdapter(item)
        if adapter.get("keyword") and not adapter.get("keyword_match"):
            adapter["images"], adapter["image_failures"] = [], []
            return item
        failures: list[dict] = [{"url": u, "reason": "bad_url"} for u in adapter.get("bad_image_urls") or []]
        allowed: list[str] = []
        requests: list[Request] = []
        meta = {"download_maxsize": self.max_bytes, "ptt_guard_host": True}  # guard re-checks redirect targets
        for url in adapter.get("image_urls") or []:
            try:  # a malformed URL (bad port, bad IPv6 literal) fails alone, never the whole post
                request = Request(url, callback=NO_CALLBACK, meta=dict(meta))
            except ValueError:
                failures.append({"url": url, "reason": "bad_url"})
                continue
            reason = await self._host_reason(url)
            if reason:
                failures.append({"url": url, "reason": reason})
            else:
                allowed.append(url)
                requests.append(request)
        info = self.spiderinfo
        coros = [self._process_request(r, info, item) for r in requests]
        outcomes = await maybe_deferred_to_future(
            DeferredList([deferred_from_coro(c) for c in coros], consumeErrors=True)
        )
        images = []
        for url, (ok, value) in zip(allowed, outcomes, strict=True):
            if ok:
                images.append(value)
            else:
                exc = value.value
                failures.append(
                    {"url": url, "reason": str(exc) if isinstance(exc, ImageRejected) else "download_error"}
                )
        stats = self.crawler.stats
        stats.inc_value("ptt/images/ok", len(images))
        for f in failures:
            stats.inc_value(f"ptt/images/failed/{f['reason']}")
        adapter["images"], adapter["image_failures"] = images, failures
        return item

    async def _host_reason(self, url: str) -> str | None:
        """Judge each host once: resolve it, refuse private addresses unless allowed.

        The lookup goes through the crawler's resolver (``scrapy_ptt.resolver.GuardedResolver``, the one the
        connection uses; the connection's own lookup is judged again, so a name that re-resolves to a private
        address is still refused). It runs even when private hosts are allowed, so a host that does not resolve
        fails at once (``dns_error``) instead of through retries.
        """
        from scrapy_ptt.resolver import installed_guard

        host = url_host(url)
        if host is None:
            return "bad_host"
        if host not in self._host_verdicts:
            reason = url_literal_block_reason(url)
            guard = installed_guard()
            if reason is None and guard is not None:
                reason = await maybe_deferred_to_future(guard.block_reason(host))
            elif reason is None:
                reason = await maybe_deferred_to_future(deferToThread(resolve_block_reason, url))
            self._host_verdicts[host] = reason
        reason = self._host_verdicts[host]
        return None if reason == "private_host" and self.allow_private else reason

    async def media_downloaded(self, response, request, info, *, item=None):
        if response.status != 200:
            raise ImageRejected(f"http_{response.status}")
        if response.url.rstrip("/").endswith("/removed.png"):
            raise ImageRejected("imgur_removed")
        ctype = (response.headers.get(b"Content-Type") or b"").decode("latin-1")
        # Pillow decodes on a worker thread so a big photo does not stall the crawl.
        reason = await maybe_deferred_to_future(
            deferToThread(
                image_reject_reason, response.body, ctype, max_bytes=self.max_bytes, max_pixels=self.max_pixels
            )
        )
        if reason is None and self.photo_filter is not None:
            reason = await maybe_deferred_to_future(deferToThread(self.photo_filter, response.body))
        if reason:
            raise ImageRejected(reason)
        return await super().media_downloaded(response, request, info, item=item)

    def media_failed(self, failure, request, info):
        exc = failure.value
        if isinstance(exc, ImageRejected):
            log.info("image %s rejected: %s", request.url, exc)
            raise exc
        raise ImageRejected(failure_reason(exc, request.url)) from exc

    def file_path(self, request, response=None, info=None, *, item=None) -> str:
        ext = request.url.rsplit(".", 1)[-1].lower()
        ext = {"jpeg": "jpg"}.get(ext, ext)
        if ext not in ("jpg", "png", "gif"):
            ext = "jpg"
        return f"full/{hashlib.sha1(request.url.encode('utf-8')).hexdigest()}.{ext}"  # noqa: S324 - a name, not security


class FeedRecordPipeline:
    """Last pipeline: turns a PostItem into the contract's feed record (field order, optional download fields)."""

    def process_item(self, item: Any) -> Any:
        return item.to_record() if isinstance(item, PostItem) else item

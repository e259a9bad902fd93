"""Scrapy settings for ptt-faces: polite defaults for ptt.cc, overridable with ``-s KEY=VALUE``.

Project settings (ours):

- ``PTT_BASE_URL`` (default ``https://www.ptt.cc``): the site to crawl; point it at the offline mirror.
- ``PTT_IMGUR_BASE`` (default ``https://i.imgur.com``): where imgur page links (``imgur.com/ID``) are sent
  after normalisation to ``{PTT_IMGUR_BASE}/ID.jpg``; the mirror serves them under ``<mirror>/imgur``.
- ``IMAGES_STORE``: a folder; setting it turns image downloads on (``full/<sha1(url)>.<ext>`` inside).
- ``PTT_ALLOW_PRIVATE_HOSTS`` (default False): allow image URLs on loopback/private/link-local/multicast hosts
  (post authors choose image URLs; only the demo and tests, whose mirror is on 127.0.0.1, turn this on).
- ``PTT_DNS_SERVERS`` (default unset = the system resolver): a list of
  ``host:port`` DNS servers for every lookup. Every connection goes through ``scrapy_ptt.resolver.GuardedResolver``
  (``TWISTED_DNS_RESOLVER``), which refuses names that answer a private address when they are connected to.
- ``PTT_IMAGE_MAX_BYTES`` (default 20 MiB), ``PTT_IMAGE_MAX_PIXELS`` (default 50 M, Pillow's bomb guard).
- ``PTT_FACE_FILTER`` (default False) and ``PTT_MIN_BLUR_VAR`` (default 0 = off): drop downloaded photos with no
  face (curation's RetinaFace detector) or a Laplacian variance under the threshold, to save disk; the filter
  is the class named by ``PTT_PHOTO_FILTER`` (default ``curation.download_filter.PhotoFilter``).
- ``PTT_STATS_FILE`` (default unset): write the crawl stats as JSON here when the crawl ends.
- ``PTT_FEED_BY_MONTH`` (default unset): e.g. ``feeds/%(name)s-%(month)s.jsonl``: one feed per month of the
  range, via Scrapy's FEEDS item filters (``scrapy_ptt.feeds``).
- ``PTT_MAX_INDEX_PAGES`` (default 0 = no limit): a safety cap on index pages walked.

Example::

    scrapy crawl ptt_beauty -a start_date=2024-01-01 -a end_date=2024-01-31 -s DOWNLOAD_DELAY=2 -O feed.jsonl
"""

BOT_NAME = "ptt_faces"
SPIDER_MODULES = ["scrapy_ptt.spiders"]
NEWSPIDER_MODULE = "scrapy_ptt.spiders"
COMMANDS_MODULE = "scrapy_ptt.commands"  # `scrapy crawl` checks ptt_beauty arguments before the engine starts

PTT_BASE_URL = "https://www.ptt.cc"
PTT_IMGUR_BASE = "https://i.imgur.com"
PTT_ALLOW_PRIVATE_HOSTS = False
PTT_DNS_SERVERS: list[str] = []
TWISTED_DNS_RESOLVER = "scrapy_ptt.resolver.GuardedResolver"  # judges the addresses actually connected to
PTT_IMAGE_MAX_BYTES = 20 * 1024 * 1024  # larger than any photo PTT posters link; stops runaway downloads
PTT_IMAGE_MAX_PIXELS = 50_000_000  # Pillow decompression-bomb guard (its own default warns at ~89 M)
PTT_MAX_INDEX_PAGES = 0
PTT_STATS_FILE = None
PTT_FACE_FILTER = False
PTT_MIN_BLUR_VAR = 0.0
# A later stage's plug-in, named (never imported) and loaded only when the filter is on; tests/test_layout.py
# checks that it exists and that nothing it imports leads back into the crawler.
PTT_PHOTO_FILTER = "curation.download_filter.PhotoFilter"
PTT_FEED_BY_MONTH = None

# Politeness: say who we are, obey robots.txt, one site at a time, adapt to the server's latency.
USER_AGENT = "ptt-faces/0.1 (+https://github.com/ptt-faces/ptt-faces; research crawler)"
ROBOTSTXT_OBEY = True
CONCURRENT_REQUESTS = 8
CONCURRENT_REQUESTS_PER_DOMAIN = 2
DOWNLOAD_DELAY = 0.5
AUTOTHROTTLE_ENABLED = True
AUTOTHROTTLE_START_DELAY = 1.0
AUTOTHROTTLE_MAX_DELAY = 30.0
AUTOTHROTTLE_TARGET_CONCURRENCY = 1.0
DOWNLOAD_TIMEOUT = 30

# Resilience: retry 429 and 5xx after a backoff (Retry-After, else exponential); AutoThrottle keeps the pace.
RETRY_ENABLED = True
RETRY_TIMES = 3
RETRY_HTTP_CODES = [429, 500, 502, 503, 504, 522, 524, 408]
DOWNLOADER_MIDDLEWARES = {
    "scrapy_ptt.middlewares.BackoffMiddleware": 560,  # waits before each retry
    "scrapy_ptt.middlewares.PrivateHostGuardMiddleware": 50,  # image requests and their redirects: no private hosts
}
PTT_BACKOFF_BASE_S = 1.0  # 1, 2, 4 s for the 1st..3rd retry, unless the server's Retry-After says otherwise
PTT_BACKOFF_MAX_S = 60.0

# Images: our FilesPipeline subclass (on only when IMAGES_STORE is set), then the feed-record shaper.
ITEM_PIPELINES = {
    "scrapy_ptt.pipelines.PttImagesPipeline": 300,
    "scrapy_ptt.pipelines.FeedRecordPipeline": 900,
}
MEDIA_ALLOW_REDIRECTS = True  # i.imgur.com answers deleted images with a redirect to removed.png
FILES_EXPIRES = 365

FEED_EXPORT_ENCODING = "utf-8"
# -O replaces the old feed only when the crawl did not fail (a dead board keeps yesterday's feed)
FEED_STORAGES = {"": "scrapy_ptt.feeds.KeepOnFailureFileStorage", "file": "scrapy_ptt.feeds.KeepOnFailureFileStorage"}
TWISTED_REACTOR = "twisted.internet.asyncioreactor.AsyncioSelectorReactor"
LOG_LEVEL = "INFO"

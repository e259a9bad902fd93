"""The crawl feed record: one post per JSONL line (contract 1 in docs/contracts.md; this module owns it).

``scrapy crawl ptt_beauty ... -O feed.jsonl`` writes UTF-8 (not ``\\u``-escaped) JSON lines with these fields,
in this order:

=================  ==============  ==========================================================================
field              type            meaning
=================  ==============  ==========================================================================
``article_id``     str             ``M.<unix>.A.<hex>``
``url``            str             absolute article URL (on the crawled base URL)
``board``          str             board name from the URL, e.g. ``Beauty``
``list_title``     str             title as shown in the index row (all text nodes joined, blank runs folded)
``list_title_raw`` str             the same, exactly as on the board (blank runs, ideographic and trailing
                                   spaces kept: the homework answer keys compare these strings)
``title``          str or null     the article's own ``標題`` meta line
``author``         str or null     the ``作者`` meta line, e.g. ``gj94ek (我帥的太沉重)``
``date``           str             ``MMDD``, Asia/Taipei, from the id's timestamp
``published_at``   str             ISO 8601 with ``+08:00``, from the id's timestamp
``list_push``      int             index row push count (``爆``=100, ``X1``..``X9``=-10..-90, ``XX``=-100, empty=0)
``pushes``         object          ``{"push": n, "boo": n, "neutral": n}`` counted in the article
``keyword``        str or null     the ``-a keyword=`` asked for
``keyword_match``  list[str]       where it matched: subset of ``["title", "body"]`` (empty when no keyword)
``image_urls``     list[str]       normalised direct image URLs, body first then pushes, de-duplicated
``image_urls_raw`` list[str]       image links as written in the post (by extension; ``http://`` and
                                   ``imgur.com/a/ID.gif`` kept), body then pushes, de-duplicated, for the
                                   homework files; downloads use ``image_urls``
``images``         list[object]    only when downloads are on (``IMAGES_STORE`` set): ``{url, path, checksum,
                                   status}`` per stored image (Scrapy's media-pipeline format); ``path`` is
                                   relative to ``IMAGES_STORE`` (``full/<sha1(url)>.<ext>``)
``image_failures`` list[object]    only when downloads are on: ``{url, reason}`` per image that failed
=================  ==============  ==========================================================================

When a keyword is given, only posts that match it get their images downloaded (``images`` and
``image_failures`` are then ``[]`` for the others); without a keyword every post's images are downloaded.

Every consumer (``ptt-curate``, ``ptt-homework``) reads a feed through :func:`read_posts`, the one reader, which
turns a missing file, a line that is not JSON or a line that is not a record into a one-line :class:`FeedError`
naming the file, the line and the fix. Example::

    from scrapy_ptt.items import read_posts
    for post in read_posts("feed.jsonl"):
        print(post["date"], post["list_title"], len(post["image_urls"]), [i["path"] for i in post.get("images", [])])
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from common.fileio import iter_jsonl

FEED_FIELDS = (
    "article_id",
    "url",
    "board",
    "list_title",
    "list_title_raw",
    "title",
    "author",
    "date",
    "published_at",
    "list_push",
    "pushes",
    "keyword",
    "keyword_match",
    "image_urls",
    "image_urls_raw",
    "images",
    "image_failures",
)


@dataclass
class PostItem:
    article_id: str
    url: str
    board: str
    list_title: str
    title: str | None
    author: str | None
    date: str
    published_at: str
    list_push: int
    pushes: dict[str, int]
    keyword: str | None
    keyword_match: list[str]
    image_urls: list[str]
    images: list[dict] | None = None  # None = downloads off; the feed then leaves the field out
    image_failures: list[dict] | None = None
    bad_image_urls: list[str] = field(default_factory=list)  # malformed image links: the pipeline fails them (bad_url)
    list_title_raw: str | None = None  # None: the same as list_title
    image_urls_raw: list[str] = field(default_factory=list)

    def to_record(self) -> dict:
        """The feed record: contract fields in order, download fields only when downloads ran."""
        raw = asdict(self)
        if raw["list_title_raw"] is None:
            raw["list_title_raw"] = raw["list_title"]
        return {k: raw[k] for k in FEED_FIELDS if not (k in ("images", "image_failures") and raw[k] is None)}


class FeedError(ValueError):
    """A feed that cannot be read; the message names the file (and line) and the fix."""


def read_posts(
    path: str | Path, *, require: tuple[str, ...] = ("article_id",), missing_hint: str | None = None
) -> list[dict]:
    """The records of a ``ptt_beauty`` JSONL feed, in file order, each holding every field in ``require``.
    ``missing_hint`` replaces the default advice when the file does not exist (each command knows its crawl)."""
    path = Path(path)
    if not path.is_file():
        hint = missing_hint or f"make one with `scrapy crawl ptt_beauty ... -O {path}`"
        raise FeedError(f"{path}: no such feed; {hint}")

    def bad(n: int, msg: str) -> FeedError:
        return FeedError(f"{path}:{n}: not a JSON line ({msg}); is this a JSONL feed (-O feed.jsonl)?")

    posts = []
    for n, rec in iter_jsonl(path, bad):
        if not isinstance(rec, dict) or any(k not in rec for k in require):
            raise FeedError(
                f"{path}:{n}: not a ptt_beauty feed record (no {'/'.join(require)}); see docs/contracts.md"
            )
        posts.append(rec)
    return posts

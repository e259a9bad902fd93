"""Pure HTML helpers for PTT board index pages and article pages (no Scrapy, no network).

The spider selects responses and calls these; everything here takes a ``str`` of HTML (or a URL) and returns
plain dataclasses, never raises on malformed or truncated input, and is tested on the real pages in
``../shared/ptt_html``.

Rules worth knowing (also in the README):

* Index rows after ``div.r-list-sep`` are pinned posts (``pinned=True``); rows without a link are deleted posts.
* List push count: ``爆`` = 100, ``X1``..``X9`` = -10..-90, ``XX`` = -100, empty = 0.
* Titles join every text node, decoding Cloudflare's ``__cf_email__`` spans back to the address.
* Article body = the text of ``#main-content`` minus the meta lines, push rows and ``richcontent`` embeds,
  cut at the ``※ 發信站`` footer (or the 2005-era ``◆ From:``).
* Signature: a ``--`` line right before the footer is the footer's own separator; the signature is what follows
  the last remaining ``--`` line. Links in the signature are NOT post images (the poster's standing banner,
  repeated under every post they write); they are reported in ``Article.signature_image_urls`` only.
* Image links: ``<a href>`` in the body and in push contents, http(s), path ending in jpg/jpeg/png/gif
  (any case), junk after the extension cut, imgur page links (``imgur.com/ID``, ``m.imgur.com/ID``)
  normalised to ``https://i.imgur.com/ID.jpg``, albums/galleries rejected, de-duplicated in order.
* Times: the article id ``M.<unix>.A.<hex>`` is the post time; Asia/Taipei is UTC+08:00 with no DST since 1979.

Example::

    >>> from scrapy_ptt.parsing import normalise_image_url, parse_push_count, published_at
    >>> normalise_image_url("http://imgur.com/SdtkkiQ")
    'https://i.imgur.com/SdtkkiQ.jpg'
    >>> parse_push_count("X3"), parse_push_count("爆")
    (-30, 100)
    >>> published_at("M.1704067200.A.123").isoformat()
    '2024-01-01T08:00:00+08:00'
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from urllib.parse import parse_qs, urljoin, urlsplit

import lxml.etree
import lxml.html

TAIPEI = timezone(timedelta(hours=8), "Asia/Taipei")  # no DST in Taiwan since 1979
ARTICLE_ID_RE = re.compile(r"M\.(\d{1,12})\.A\.([0-9A-Fa-f]{1,6})")
INDEX_NUM_RE = re.compile(r"/index(\d+)\.html")
ANNOUNCEMENT_RE = re.compile(r"^\s*(?:(?:Fw|Re|轉)\s*[:：]\s*)*\[公告\]", re.IGNORECASE)
FOOTER_MARKERS = ("※ 發信站", "◆ From:")
IMAGE_PATH_RE = re.compile(r"^(.*?\.(?:jpe?g|png|gif))(?![A-Za-z0-9_])", re.IGNORECASE)
IMGUR_PAGE_HOSTS = frozenset({"imgur.com", "www.imgur.com", "m.imgur.com"})
IMGUR_DIRECT_HOST = "i.imgur.com"
IMGUR_ALBUM_PREFIXES = ("a", "gallery", "t", "r", "user", "album", "topic")
IMGUR_ID_RE = re.compile(r"^[A-Za-z0-9]{5,10}$")
DEFAULT_IMGUR_BASE = "https://i.imgur.com"
PUSH_KINDS = {"推": "push", "噓": "boo", "→": "neutral"}
_SKIP_CLASSES = frozenset({"article-metaline", "article-metaline-right", "richcontent", "push"})
_LEGACY_AUTHOR_RE = re.compile(r"^\s*作者[:：]?\s+(.+?)\s+(?:看板|站內)[:：]?\s+(\S+)\s*$")
_LEGACY_TITLE_RE = re.compile(r"^\s*標題[:：]?\s+(.*?)\s*$")
_LEGACY_TIME_RE = re.compile(r"^\s*時間[:：]?\s+(.*?)\s*$")
_GLUED_TIME_RE = re.compile(r"^(.*?)\s*時間[:：]\s*([A-Z][a-z]{2} [A-Z][a-z]{2}\s+\d{1,2} \d\d:\d\d:\d\d \d{4})\s*$")


# ---------------------------------------------------------------- small pure helpers


def parse_push_count(text: str | None) -> int:
    """List push count: '爆' -> 100, 'X1'..'X9' -> -10..-90, 'XX' -> -100, '' -> 0, digits as is."""
    s = (text or "").strip()
    if not s:
        return 0
    if s == "爆":
        return 100
    if s.upper() == "XX":
        return -100
    if len(s) == 2 and s[0] in "Xx" and s[1].isdigit():
        return -10 * int(s[1])
    try:
        return int(s)
    except ValueError:
        return 0


def is_announcement(title: str | None) -> bool:
    """True for '[公告] ...', 'Fw: [公告] ...', 'Re: [公告] ...'."""
    return bool(title) and bool(ANNOUNCEMENT_RE.match(title))


def article_id_from_url(url: str | None) -> str | None:
    m = ARTICLE_ID_RE.search(url or "")
    return m.group(0) if m else None


def published_at(article_id: str) -> datetime:
    """The article's own timestamp (from its id) as an aware Asia/Taipei datetime; ValueError if no id."""
    m = ARTICLE_ID_RE.search(article_id or "")
    if not m:
        raise ValueError(f"not a PTT article id: {article_id!r} (expected M.<unix>.A.<hex>)")
    return datetime.fromtimestamp(int(m.group(1)), UTC).astimezone(TAIPEI)


def taipei_day_bounds(start: date, end: date) -> tuple[int, int]:
    """Unix seconds [lo, hi] covering start 00:00:00 .. end 23:59:59 Asia/Taipei, inclusive."""
    lo = datetime(start.year, start.month, start.day, tzinfo=TAIPEI)
    hi = datetime(end.year, end.month, end.day, tzinfo=TAIPEI) + timedelta(days=1)
    return int(lo.timestamp()), int(hi.timestamp()) - 1


def index_number(url: str | None) -> int | None:
    m = INDEX_NUM_RE.search(url or "")
    return int(m.group(1)) if m else None


def decode_cf_email(hex_str: str) -> str:
    """Cloudflare e-mail obfuscation: first byte is the XOR key for the rest."""
    try:
        data = bytes.fromhex(hex_str)
    except ValueError:
        return ""
    if not data:
        return ""
    key = data[0]
    return bytes(b ^ key for b in data[1:]).decode("utf-8", errors="replace")


def normalise_image_url(url: str | None, imgur_base: str = DEFAULT_IMGUR_BASE) -> str | None:
    """A direct image URL, or None when the link is not an image (album, gallery, page, other file type).

    imgur page links map to ``{imgur_base}/ID.jpg`` (imgur serves any format under .jpg); the spider's
    ``PTT_IMGUR_BASE`` setting can point that at a mirror.
    """
    if not url:
        return None
    url = url.strip()
    if url.startswith("//"):
        url = "https:" + url
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in 0..65535
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not host:
        return None
    path = parts.path
    if host in IMGUR_PAGE_HOSTS or host == IMGUR_DIRECT_HOST:
        segs = [s for s in path.split("/") if s]
        if len(segs) != 1 or segs[0].lower() in IMGUR_ALBUM_PREFIXES:
            return None  # albums, galleries, tags, user pages
        seg = segs[0]
        m = IMAGE_PATH_RE.match(seg)
        if m:
            stem, ext = m.group(1).rsplit(".", 1)
        else:
            stem, ext = seg, "jpg"
            if "." in seg or "," in seg:
                return None  # .gifv/.mp4 videos and 'ID,ID2' multi-image pages
        if not IMGUR_ID_RE.match(stem):
            return None
        return f"{imgur_base.rstrip('/')}/{stem}.{ext.lower()}"
    m = IMAGE_PATH_RE.match(path)
    if not m:
        return None
    return f"{parts.scheme.lower()}://{parts.netloc}{m.group(1)}"


def dedupe(urls: list[str]) -> list[str]:
    return list(dict.fromkeys(urls))


# ---------------------------------------------------------------- lxml plumbing


def _parse_html(html: str | bytes, problems: list[str] | None = None):
    """An lxml root, or None for input lxml cannot make a tree of. libxml2 stops at a text node over 10 MB or
    nesting deeper than 256 (its defences against memory bombs, kept on): the rest of the page is then missing
    from the tree, and the parser's message is appended to ``problems``."""
    if isinstance(html, bytes):
        html = html.decode("utf-8", errors="replace")
    html = html.replace("\x00", "")
    if not html.strip():
        return None
    parser = lxml.html.HTMLParser()
    try:
        root = lxml.html.document_fromstring(html, parser=parser)
    except (lxml.etree.ParserError, ValueError):
        return None
    if problems is not None:
        for err in parser.error_log:
            if err.type_name == "ERR_RESOURCE_LIMIT":
                problems.append(err.message.strip())
    return root


def looks_like_image_link(href: str | None) -> bool:
    """A link whose path ends like an image file, whatever else is wrong with it (a malformed host or port)."""
    return bool(href) and bool(re.search(r"\.(?:jpe?g|png|gif)(?:[?#:].*)?$", href.strip(), re.IGNORECASE))


def _absolute(base_url: str, href: str) -> str | None:
    """``href`` made absolute against ``base_url``; None when the URL is malformed (``http://[bad``, a port
    ``:abc`` or ``:99999``)."""
    try:
        url = urljoin(base_url, href) if base_url else href
        urlsplit(url).port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return None
    return url


def _classes(el) -> set[str]:
    return set((el.get("class") or "").split())


def _has_class(el, cls: str) -> bool:
    return cls in _classes(el)


def _text_of(el) -> str:
    """All text nodes joined, with Cloudflare e-mail spans decoded to the real address."""
    out: list[str] = []

    def walk(node) -> None:
        if not isinstance(node.tag, str):  # comments, processing instructions
            if node.tail:
                out.append(node.tail)
            return
        if node.get("data-cfemail") is not None or _has_class(node, "__cf_email__"):
            out.append(decode_cf_email(node.get("data-cfemail") or "") or "".join(node.itertext()))
        else:
            if node.text:
                out.append(node.text)
            for child in node:
                walk(child)
        if node is not el and node.tail:
            out.append(node.tail)

    walk(el)
    return "".join(out)


# ---------------------------------------------------------------- index pages


@dataclass
class IndexRow:
    title: str  # list title, all text nodes joined
    url: str | None  # absolute when base_url was given; None for deleted rows
    article_id: str | None
    push: int
    date: str  # the list's ' M/DD' as shown
    author: str
    mark: str
    pinned: bool  # after div.r-list-sep
    title_raw: str = ""  # the title exactly as on the board (blank runs, ideographic and trailing spaces kept)

    @property
    def deleted(self) -> bool:
        return self.url is None

    @property
    def timestamp(self) -> int | None:
        m = ARTICLE_ID_RE.search(self.article_id or "")
        return int(m.group(1)) if m else None


@dataclass
class IndexPage:
    rows: list[IndexRow] = field(default_factory=list)
    prev_url: str | None = None  # 上頁 (older)
    next_url: str | None = None  # 下頁 (newer); None on the newest page
    oldest_url: str | None = None
    newest_url: str | None = None

    def timestamps(self) -> list[int]:
        """Post timestamps of the page's own (non-pinned, linked) rows."""
        return [t for r in self.rows if not r.pinned and (t := r.timestamp) is not None]


def parse_index(html: str | bytes, base_url: str = "") -> IndexPage:
    page = IndexPage()
    root = _parse_html(html)
    if root is None:
        return page
    for a in root.iter("a"):
        if not _has_class(a, "btn") or a.get("href") is None:
            continue
        label = _text_of(a)
        href = urljoin(base_url, a.get("href"))
        if "上頁" in label:
            page.prev_url = href
        elif "下頁" in label:
            page.next_url = href
        elif "最舊" in label:
            page.oldest_url = href
        elif "最新" in label:
            page.newest_url = href
    pinned = False
    for el in root.iter("div"):  # rows and the separator are divs; one pass keeps their order
        cls = (el.get("class") or "").split()
        if "r-list-sep" in cls:
            pinned = True
        elif "r-ent" in cls:
            page.rows.append(_parse_row(el, base_url, pinned))
    return page


def _first_with_class(el, cls: str):
    for child in el.iter():
        if isinstance(child.tag, str) and _has_class(child, cls):
            return child
    return None


_ROW_FIELDS = frozenset({"nrec", "mark", "title", "date", "author"})


def _parse_row(ent, base_url: str, pinned: bool) -> IndexRow:
    found: dict[str, object] = {}
    for el in ent.iter("div"):  # one pass over the row instead of one per field
        for c in (el.get("class") or "").split():
            if c in _ROW_FIELDS and c not in found:
                found[c] = el
    nrec, mark, title_div = found.get("nrec"), found.get("mark"), found.get("title")
    date_div, author_div = found.get("date"), found.get("author")
    link = None
    if title_div is not None:
        for a in title_div.iter("a"):
            if a.get("href"):
                link = a
                break
    title_src = link if link is not None else title_div
    title_raw = _text_of(title_src) if title_src is not None else ""
    title = " ".join(title_raw.split())
    url = urljoin(base_url, link.get("href")) if link is not None else None
    return IndexRow(
        title=title,
        url=url,
        article_id=article_id_from_url(url),
        push=parse_push_count(_text_of(nrec) if nrec is not None else ""),
        date=_text_of(date_div).strip() if date_div is not None else "",
        author=_text_of(author_div).strip() if author_div is not None else "",
        mark=_text_of(mark).strip() if mark is not None else "",
        pinned=pinned,
        title_raw=title_raw if link is not None else title,
    )


# ---------------------------------------------------------------- article pages


@dataclass
class Article:
    title: str | None = None
    author: str | None = None
    board: str | None = None
    time_text: str | None = None  # the 時間 line as written, e.g. 'Sat Aug  5 18:47:02 2017'
    body: str = ""  # text before the footer (signature included, as the seeds match keywords there)
    pushes: dict[str, int] = field(default_factory=lambda: {"push": 0, "boo": 0, "neutral": 0})
    body_image_urls: list[str] = field(default_factory=list)
    push_image_urls: list[str] = field(default_factory=list)
    signature_image_urls: list[str] = field(default_factory=list)
    non_image_links: list[str] = field(default_factory=list)
    bad_image_urls: list[str] = field(default_factory=list)  # image links too malformed to fetch, as written
    # Image links as written in the post (``http://`` kept, albums' ``imgur.com/a/ID.gif`` kept, not normalised),
    # for the homework files, whose answer keys hold the strings as posted; body (no signature), then pushes.
    body_image_urls_raw: list[str] = field(default_factory=list)
    push_image_urls_raw: list[str] = field(default_factory=list)
    parse_problems: list[str] = field(default_factory=list)  # parser limits hit: the page after them is missing

    @property
    def image_urls(self) -> list[str]:
        """Body first, then pushes, de-duplicated; signature links excluded."""
        return dedupe(self.body_image_urls + self.push_image_urls)

    @property
    def image_urls_raw(self) -> list[str]:
        """The image links as written (by their extension), body first, then pushes, de-duplicated; no signature."""
        return dedupe(self.body_image_urls_raw + self.push_image_urls_raw)


def is_over18_gate(html: str | bytes, url: str = "") -> bool:
    """The '/ask/over18' page PTT shows to visitors without the over18 cookie."""
    if "/ask/over18" in (url or ""):
        return True
    text = html.decode("utf-8", "replace") if isinstance(html, bytes) else (html or "")
    return "over18-notice" in text or 'action="/ask/over18"' in text


def is_not_found(html: str | bytes) -> bool:
    """PTT's deleted-article page: <title>404</title> and '404 - Not Found.' in the content."""
    text = html.decode("utf-8", "replace") if isinstance(html, bytes) else (html or "")
    head = text[:4000]
    return "<title>404</title>" in head or ("404 - Not Found" in text and 'id="main-content"' not in text)


def _find_main(root):
    for el in root.iter("div"):
        if el.get("id") == "main-content":
            return el
    return None


def _walk_content(main) -> tuple[str, list[tuple[int, str]]]:
    """Text of #main-content without meta lines, pushes and embeds; links as (offset in text, href)."""
    parts: list[str] = []
    links: list[tuple[int, str]] = []
    pos = 0

    def add(s: str | None) -> None:
        nonlocal pos
        if s:
            parts.append(s)
            pos += len(s)

    def walk(node) -> None:
        if node.tag == "a" and node.get("href"):
            links.append((pos, node.get("href")))
        add(node.text)
        for child in node:
            if isinstance(child.tag, str) and not (_classes(child) & _SKIP_CLASSES):
                walk(child)
            add(child.tail)

    walk(main)
    return "".join(parts), links


def _meta_lines(main) -> dict[str, str]:
    meta: dict[str, str] = {}
    for el in main.iter("div"):
        cls = _classes(el)
        if "article-metaline" in cls or "article-metaline-right" in cls:
            tag = _first_with_class(el, "article-meta-tag")
            value = _first_with_class(el, "article-meta-value")
            if tag is not None and value is not None:
                meta.setdefault(_text_of(tag).strip(), _text_of(value).strip())
    return meta


def _legacy_header(text: str) -> tuple[dict[str, str], int]:
    """Header written as text at the top of the content (pre-2008 pages): fields and chars consumed."""
    meta: dict[str, str] = {}
    consumed = 0
    offset = 0
    for line in text.splitlines(keepends=True)[:8]:
        offset += len(line)
        s = line.strip()
        if not s and not meta:
            continue
        if m := _LEGACY_AUTHOR_RE.match(s):
            meta["作者"], meta["看板"] = m.group(1).strip(), m.group(2).strip()
        elif m := _LEGACY_TITLE_RE.match(s):
            meta["標題"] = m.group(1)
        elif m := _LEGACY_TIME_RE.match(s):
            meta["時間"] = m.group(1)
        elif meta and s and set(s) <= set("─-"):
            pass  # the ─── rule under old headers
        else:
            break
        consumed = offset
    return meta, consumed


def _signature_start(text: str) -> int | None:
    """Offset of the signature (after the last '--' line, ignoring a '--' right before the footer)."""
    lines = text.splitlines(keepends=True)
    offsets, off = [], 0
    for line in lines:
        offsets.append(off)
        off += len(line)
    seps = [i for i, line in enumerate(lines) if line.strip() == "--"]
    if seps and all(not line.strip() for line in lines[seps[-1] + 1 :]):
        seps.pop()  # the footer's own separator
    if not seps:
        return None
    i = seps[-1]
    return offsets[i] + len(lines[i])


def parse_article(html: str | bytes, base_url: str = "", imgur_base: str = DEFAULT_IMGUR_BASE) -> Article:
    art = Article()
    root = _parse_html(html, art.parse_problems)
    if root is None:
        return art
    main = _find_main(root)
    if main is None:
        return art
    meta = _meta_lines(main)
    text, links = _walk_content(main)
    start = 0
    if not meta:
        meta, start = _legacy_header(text)
    art.author = meta.get("作者") or None
    art.board = meta.get("看板") or None
    art.title = meta.get("標題")
    art.time_text = meta.get("時間") or None
    if art.title and not art.time_text and (m := _GLUED_TIME_RE.match(art.title)):
        art.title, art.time_text = m.group(1), m.group(2)  # '標題 ...時間: Thu Jun 14 ...' glued headers
    art.title = art.title or None
    cut = min((i for i in (text.find(mk) for mk in FOOTER_MARKERS) if i >= 0), default=len(text))
    art.body = text[start:cut].strip("\n")
    sig = _signature_start(text[:cut])
    for pos, href in links:
        if pos < start or pos >= cut:
            continue
        if looks_like_image_link(href) and not (sig is not None and pos >= sig):
            art.body_image_urls_raw.append(href)
        absolute = _absolute(base_url, href)
        if absolute is None:  # one malformed link fails alone; the post and its other links stay
            if looks_like_image_link(href) and not (sig is not None and pos >= sig):
                art.bad_image_urls.append(href.strip())
            else:
                art.non_image_links.append(href)
            continue
        img = normalise_image_url(absolute, imgur_base)
        if img is None:
            art.non_image_links.append(absolute)
        elif sig is not None and pos >= sig:
            art.signature_image_urls.append(img)
        else:
            art.body_image_urls.append(img)
    art.body_image_urls = dedupe(art.body_image_urls)
    art.body_image_urls_raw = dedupe(art.body_image_urls_raw)
    _parse_pushes(main, art, base_url, imgur_base)
    return art


def _parse_pushes(main, art: Article, base_url: str, imgur_base: str) -> None:
    urls: list[str] = []
    raw: list[str] = []
    for el in main.iter("div"):
        if not _has_class(el, "push") or _has_class(el, "warning-box"):
            continue
        tag = _first_with_class(el, "push-tag")
        if tag is None:
            continue
        kind = PUSH_KINDS.get(_text_of(tag).strip())
        if kind is None:
            continue
        art.pushes[kind] += 1
        content = _first_with_class(el, "push-content")
        if content is None:
            continue
        for a in content.iter("a"):
            href = a.get("href")
            if looks_like_image_link(href):
                raw.append(href)
            absolute = _absolute(base_url, href) if href else None
            img = normalise_image_url(absolute, imgur_base) if absolute else None
            if img:
                urls.append(img)
            elif href and absolute is None and looks_like_image_link(href):
                art.bad_image_urls.append(href.strip())
    art.push_image_urls = dedupe(urls)
    art.push_image_urls_raw = dedupe(raw)


def over18_target(url: str) -> str | None:
    """The 'from' path of an /ask/over18?from=... URL."""
    try:
        return (parse_qs(urlsplit(url).query).get("from") or [None])[0]
    except ValueError:
        return None

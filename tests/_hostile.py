"""Hostile stand-ins for the crawl tests: a DNS server on loopback that answers each name differently per lookup
(DNS rebinding), and a one-post PTT board whose article links whatever a test asks for.

Example::

    with StandInDNS({"rebind.test": ["93.184.216.34", "127.0.0.2"]}) as dns, serve_board(body_html) as base:
        ...  # scrapy crawl ... -s PTT_BASE_URL=base -s PTT_DNS_SERVERS=127.0.0.1:<dns.port>
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import struct
import threading

ARTICLE_ID = "M.1704067230.A.0A1"  # 2024-01-01 08:00:30 +08:00


class StandInDNS:
    """UDP DNS server on 127.0.0.1: ``answers[name]`` is a list consumed one per A query (the last repeats);
    an entry ``None`` answers SERVFAIL. Unknown names get NXDOMAIN, AAAA queries an empty answer.
    ``queries`` records ``(name, answer)`` in order."""

    def __init__(self, answers: dict[str, list[str | None]]):
        self.answers = {k.lower(): list(v) for k, v in answers.items()}
        self.queries: list[tuple[str, str | None]] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._stop = False

    def _answer(self, data: bytes) -> bytes:
        qid, _flags, qd = struct.unpack(">HHH", data[:6])
        pos, labels = 12, []
        while data[pos]:
            n = data[pos]
            labels.append(data[pos + 1 : pos + 1 + n].decode("ascii", "replace"))
            pos += 1 + n
        qtype = struct.unpack(">H", data[pos + 1 : pos + 3])[0]
        question = data[12 : pos + 5]
        name = ".".join(labels).lower()
        if name not in self.answers:
            return struct.pack(">HHHHHH", qid, 0x8183, 1, 0, 0, 0) + question  # NXDOMAIN
        if qtype not in (1, 255):  # A, or ANY (what twisted.names' getHostByName asks)
            return struct.pack(">HHHHHH", qid, 0x8180, 1, 0, 0, 0) + question  # no AAAA records
        queue = self.answers[name]
        ip = queue.pop(0) if len(queue) > 1 else queue[0]
        self.queries.append((name, ip))
        if ip is None:
            return struct.pack(">HHHHHH", qid, 0x8182, 1, 0, 0, 0) + question  # SERVFAIL
        rr = struct.pack(">HHHIH", 0xC00C, 1, 1, 0, 4) + socket.inet_aton(ip)
        return struct.pack(">HHHHHH", qid, 0x8180, 1, 1, 0, 0) + question + rr

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                data, addr = self.sock.recvfrom(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            with contextlib.suppress(Exception):
                self.sock.sendto(self._answer(data), addr)

    def __enter__(self) -> StandInDNS:
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()


class _Routes(http.server.BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, dict, bytes]] = {}
    hits: list[str] = []

    def do_GET(self):  # noqa: N802
        self.hits.append(self.path)
        status, headers, body = self.routes.get(self.path, (404, {}, b"not here"))
        self.send_response(status)
        for k, v in {"Content-Type": "text/html; charset=utf-8", **headers}.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(routes: dict[str, tuple[int, dict, bytes]], host: str = "127.0.0.1"):
    """A threaded HTTP server on ``host``; yields ``(base_url, hits)`` (request paths in order)."""
    handler = type("H", (_Routes,), {"routes": routes, "hits": []})
    srv = http.server.ThreadingHTTPServer((host, 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://{host}:{srv.server_address[1]}", handler.hits
    finally:
        srv.shutdown()
        srv.server_close()


def board_routes(body_html: str, title: str = "[正妹] 測試") -> dict[str, tuple[int, dict, bytes]]:
    """``/bbs/Beauty/index.html`` with one post and its article page, whose body is ``body_html``."""
    index = (
        '<html><body><div class="r-list-container">'
        f'<div class="r-ent"><div class="nrec"></div><div class="title"><a href="/bbs/Beauty/{ARTICLE_ID}.html">'
        f'{title}</a></div><div class="meta"><div class="author">t</div><div class="date"> 1/01</div></div></div>'
        "</div></body></html>"
    )
    article = (
        '<html><body><div id="main-content"><div class="article-metaline"><span class="article-meta-tag">標題'
        f'</span><span class="article-meta-value">{title}</span></div>\n{body_html}\n--\n'
        "※ 發信站: 批踢踢實業坊(ptt.cc)\n</div></body></html>"
    )
    return {
        "/bbs/Beauty/index.html": (200, {}, index.encode("utf-8")),
        f"/bbs/Beauty/{ARTICLE_ID}.html": (200, {}, article.encode("utf-8")),
    }

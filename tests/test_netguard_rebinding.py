"""The image-host guard judges the address actually connected to.

A real ``scrapy crawl`` against a one-post board on 127.0.0.1, with ``PTT_DNS_SERVERS`` pointing Scrapy's resolver
at a stand-in DNS server on loopback that answers a public address to the first lookup of ``rebind.test`` and
127.0.0.2 to the next ones (DNS rebinding). The image server listens on 127.0.0.2 and counts its requests.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests._hostile import StandInDNS, board_routes, serve

ROOT = Path(__file__).resolve().parents[1]


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 120, 90)).save(buf, "PNG")
    return buf.getvalue()


def _crawl(tmp_path: Path, base: str, dns_port: int, *extra: str) -> tuple[dict, subprocess.CompletedProcess]:
    feed = tmp_path / "feed.jsonl"
    cmd = [
        sys.executable, "-m", "scrapy", "crawl", "ptt_beauty", "-a", "start_date=2024-01-01",
        "-a", "end_date=2024-01-01", "-s", f"PTT_BASE_URL={base}", "-s", f"IMAGES_STORE={tmp_path / 'img'}",
        "-s", f"PTT_DNS_SERVERS=127.0.0.1:{dns_port}", "-s", "AUTOTHROTTLE_ENABLED=False", "-s", "DOWNLOAD_DELAY=0",
        "-s", "RETRY_TIMES=0", "-s", f"PTT_STATS_FILE={tmp_path / 'stats.json'}", *extra, "-O", str(feed),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (rec,) = [json.loads(line) for line in feed.read_text(encoding="utf-8").splitlines()]
    return rec, proc


def _site(img_base: str) -> dict:
    port = img_base.rsplit(":", 1)[1]
    body = (
        f'<a href="http://rebind.test:{port}/a.jpg">a</a>\n'
        '<a href="http://[bad/x.jpg">x</a> <a href="http://h.example:abc/y.jpg">y</a>\n'
        '<a href="http://h.example:99999/z.png">z</a>\n'
    )
    return board_routes(body)


@pytest.fixture
def image_host():
    try:
        with serve({"/a.jpg": (200, {"Content-Type": "image/png"}, _png())}, host="127.0.0.2") as (base, hits):
            yield base, hits
    except OSError as exc:  # pragma: no cover - a kernel without the whole 127/8 on loopback
        pytest.skip(f"cannot listen on 127.0.0.2: {exc}")


def test_rebinding_name_is_refused_where_it_is_connected(tmp_path, image_host):
    img_base, hits = image_host
    with StandInDNS({"rebind.test": ["93.184.216.34", "127.0.0.2"]}) as dns, serve(_site(img_base)) as (base, _):
        rec, proc = _crawl(tmp_path, base, dns.port)
    assert dns.queries[0] == ("rebind.test", "93.184.216.34")  # the first lookup passed the old check
    assert ("rebind.test", "127.0.0.2") in dns.queries  # the connection's own lookup was judged
    assert hits == []  # nothing, not even robots.txt, was fetched from the loopback-only host
    reasons = {f["url"]: f["reason"] for f in rec["image_failures"]}
    assert reasons[f"http://rebind.test:{img_base.rsplit(':', 1)[1]}/a.jpg"] == "private_host"
    # item 5: each malformed link fails alone, the post stays
    assert {u: r for u, r in reasons.items() if r == "bad_url"} == {
        "http://[bad/x.jpg": "bad_url", "http://h.example:abc/y.jpg": "bad_url",
        "http://h.example:99999/z.png": "bad_url",
    }  # fmt: skip
    assert rec["images"] == [] and not (tmp_path / "img" / "full").exists()
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["ptt/images/failed/private_host"] == 1 and stats["ptt/links/malformed"] == 3
    assert "malformed image links" in proc.stderr


def test_same_crawl_with_private_hosts_allowed_fetches_through_the_stand_in(tmp_path, image_host):
    """The control: the stand-in DNS really feeds the connection (the same image is fetched from 127.0.0.2)."""
    img_base, hits = image_host
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = tmp_path / "img" / "full" / f".x.jpg.tmp-{dead.pid}-abcdefgh"  # a killed crawl's half-written image
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half")
    with StandInDNS({"rebind.test": ["93.184.216.34", "127.0.0.2"]}) as dns, serve(_site(img_base)) as (base, _):
        rec, _proc = _crawl(tmp_path, base, dns.port, "-s", "PTT_ALLOW_PRIVATE_HOSTS=True")
    assert not leftover.exists()  # cleaned as the crawl started (its owner is gone)
    assert not [p for p in (tmp_path / "img" / "full").iterdir() if p.name.startswith(".")]  # stored atomically
    assert "/a.jpg" in hits
    assert [i["url"].rsplit("/", 1)[1] for i in rec["images"]] == ["a.jpg"]
    assert (tmp_path / "img" / rec["images"][0]["path"]).is_file()
    assert sorted(f["reason"] for f in rec["image_failures"]) == ["bad_url"] * 3


def test_name_that_does_not_resolve_at_first_is_refused(tmp_path, image_host):
    """A name whose first lookup fails and later ones answer loopback is never fetched (fail closed)."""
    img_base, hits = image_host
    with StandInDNS({"rebind.test": [None, "127.0.0.2"]}) as dns, serve(_site(img_base)) as (base, _):
        rec, _proc = _crawl(tmp_path, base, dns.port)
    assert hits == [] and dns.queries
    reason = next(f["reason"] for f in rec["image_failures"] if "rebind.test" in f["url"])
    assert reason in ("dns_error", "private_host")


def test_guard_middleware_fails_closed_on_a_redirect_target_that_does_not_resolve():
    """Without the guarded resolver installed, the middleware's own lookup decides, and a failed lookup of a
    redirect target refuses the request (it used to let ``dns_error`` through to be fetched)."""
    import asyncio

    from scrapy import Request
    from scrapy.utils.test import get_crawler

    from scrapy_ptt.middlewares import PrivateHostBlocked, PrivateHostGuardMiddleware

    guard = PrivateHostGuardMiddleware(get_crawler(settings_dict={"PTT_ALLOW_PRIVATE_HOSTS": False}))
    redirected = Request("http://no-such-host.invalid/a.jpg", meta={"ptt_guard_host": True, "redirect_times": 1})
    with pytest.raises(PrivateHostBlocked, match="dns_error"):
        asyncio.run(guard.process_request(redirected))


def test_resolver_trusts_the_board_and_the_proxies_but_not_image_hosts(monkeypatch):
    """The board you crawl and the proxy you connect through may be private; a post author's host may not."""
    from scrapy.utils.test import get_crawler
    from twisted.internet import reactor

    from scrapy_ptt.resolver import GuardedResolver

    monkeypatch.setenv("http_proxy", "http://10.0.0.5:3128")
    crawler = get_crawler(settings_dict={"PTT_BASE_URL": "http://board.lan:8000"})
    guard = GuardedResolver.from_crawler(crawler, reactor)
    assert guard.is_trusted("board.lan") and guard.is_trusted("10.0.0.5") and not guard.is_trusted("rebind.test")

    class Addr:
        host = "127.0.0.2"

    assert guard.judge("rebind.test", [Addr()]) == "private_host" and guard.verdicts["rebind.test"] == "private_host"
    assert guard.judge("board.lan", [Addr()]) is None and guard.judge("gone.test", []) == "dns_error"

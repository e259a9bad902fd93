"""Which image hosts the crawler may fetch: never loopback, private, link-local, multicast or reserved addresses
(post authors choose image URLs, so an unchecked fetch could reach the crawling machine's own network).

Pure helpers: ``blocked_reason_for_ip`` judges one address; ``host_block_reason`` judges a URL's host given the
addresses it resolves to (the caller resolves, off the reactor thread). A name is judged again where it is
connected to, by ``scrapy_ptt.resolver.GuardedResolver`` (Scrapy's ``TWISTED_DNS_RESOLVER``), so a host that
re-resolves differently between the check and the fetch (DNS rebinding) is refused too.

Example::

    >>> from scrapy_ptt.netguard import url_literal_block_reason
    >>> url_literal_block_reason("http://127.0.0.1:8000/a.jpg"), url_literal_block_reason("https://i.imgur.com/a.jpg")
    ('private_host', None)
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


def blocked_reason_for_ip(addr: str) -> str | None:
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return "bad_host"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    ):
        return "private_host"
    return None


def url_host(url: str) -> str | None:
    try:
        return (urlsplit(url).hostname or "").lower() or None
    except ValueError:
        return None


def url_literal_block_reason(url: str) -> str | None:
    """Reason to refuse a URL without any DNS lookup (IP literals, localhost names); None = needs resolving or ok."""
    host = url_host(url)
    if host is None:
        return "bad_host"
    if host in LOCAL_NAMES or host.endswith(".localhost"):
        return "private_host"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    return blocked_reason_for_ip(host)


def resolve_block_reason(url: str) -> str | None:
    """Full check including DNS (blocking: call it from a thread). 'dns_error' when the host does not resolve."""
    if reason := url_literal_block_reason(url):
        return reason
    host = url_host(url)
    try:
        ipaddress.ip_address(host)
        return None  # literal, already judged
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return "dns_error"
    for info in infos:
        if reason := blocked_reason_for_ip(str(info[4][0])):
            return reason
    return None

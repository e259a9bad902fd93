"""The crawler's DNS resolver (Scrapy's ``TWISTED_DNS_RESOLVER``): every connection Scrapy opens goes through it,
so the address that is judged is the address that is connected to.

Post authors choose image URLs, so an image host may be a name that answers a public address to a first lookup
and ``127.0.0.1`` to the next one (DNS rebinding), or a redirect target whose first lookup fails. Checking a name
before queueing the request and letting Scrapy resolve it again to connect catches neither. This resolver judges
the answers of the lookup the connection itself uses: when any answer is loopback, private, link-local,
multicast or reserved (``scrapy_ptt.netguard.blocked_reason_for_ip``), it delivers no address at all, so the
connection fails with a DNS error and nothing is fetched; a lookup that fails delivers nothing either (fail
closed). Each name's last verdict (``private_host`` or ``dns_error``) is kept in :attr:`GuardedResolver.verdicts`
so the image pipeline records the right reason.

Trusted, never judged here: ``PTT_ALLOW_PRIVATE_HOSTS=True`` (everything) and the host of ``PTT_BASE_URL`` (the
board the operator chose to crawl, e.g. the offline mirror on 127.0.0.1). Image URLs on that host are still judged,
by ``scrapy_ptt.middlewares.PrivateHostGuardMiddleware`` (through :meth:`GuardedResolver.block_reason` with
``trusting=False``). The hosts of the proxies in the environment (``http_proxy``, ``https_proxy``) are trusted too:
through a proxy, the proxy resolves the image host, so only the pipeline's and the middleware's own lookups judge
it (rebinding between those lookups and the proxy's is then not caught).

``PTT_DNS_SERVERS`` (a list of ``host:port``, default unset = the system resolver) sends the lookups to those
servers instead (twisted.names, IPv4 A records); the tests point it at a stand-in DNS server on loopback.

Example (settings.py)::

    TWISTED_DNS_RESOLVER = "scrapy_ptt.resolver.GuardedResolver"
    # scrapy crawl ptt_beauty ... -s PTT_DNS_SERVERS=127.0.0.1:5353
"""

from __future__ import annotations

import ipaddress
import logging
import sys
from urllib.parse import urlsplit

from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IHostnameResolver, IHostResolution, IResolutionReceiver
from zope.interface import implementer, provider

from scrapy_ptt.netguard import blocked_reason_for_ip

log = logging.getLogger(__name__)

__all__ = ["GuardedResolver", "installed_guard"]


@implementer(IHostResolution)
class _Resolution:
    def __init__(self, name: str) -> None:
        self.name = name

    def cancel(self) -> None:  # pragma: no cover - HostnameEndpoint never cancels
        pass


@provider(IResolutionReceiver)
class _Collector:
    """Collects an upstream IHostnameResolver's answers into a Deferred list."""

    def __init__(self) -> None:
        self.addresses: list = []
        self.done: defer.Deferred = defer.Deferred()

    def resolutionBegan(self, resolution) -> None:  # noqa: N802 - Twisted's interface names
        pass

    def addressResolved(self, address) -> None:  # noqa: N802
        self.addresses.append(address)

    def resolutionComplete(self) -> None:  # noqa: N802
        self.done.callback(self.addresses)


def _first_block(addresses: list) -> str | None:
    """The reason the first refused address gives (loopback, private, ...), or None when all may be connected to."""
    return next((r for a in addresses if (r := blocked_reason_for_ip(a.host))), None)


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


@implementer(IHostnameResolver)
class GuardedResolver:
    def __init__(self, reactor, *, allow_private: bool = False, trusted=(), servers=(), timeout_s: float = 30.0):
        self.reactor = reactor
        self.allow_private = allow_private
        self.trusted = {h.lower() for h in trusted if h}
        self.timeout_s = timeout_s
        self.upstream = reactor.nameResolver  # the system resolver (getaddrinfo in a thread), IPv4 and IPv6
        self.names = None
        if servers:
            from twisted.names import client

            pairs = []
            for s in servers:
                host, _, port = str(s).rpartition(":")
                pairs.append((host or str(s), int(port) if host else 53))
            self.names = client.Resolver(servers=pairs, reactor=reactor)
        self.verdicts: dict[str, str | None] = {}

    @classmethod
    def from_crawler(cls, crawler, reactor):
        s = crawler.settings
        from urllib.request import getproxies

        trusted = []
        # the board's own host, and the proxies Scrapy's HttpProxyMiddleware connects through (http_proxy, ...)
        for url in [s.get("PTT_BASE_URL") or "", *getproxies().values()]:
            try:
                trusted.append(urlsplit(url if "://" in url else f"http://{url}").hostname or "")
            except ValueError:
                pass  # a bad PTT_BASE_URL is reported by the spider
        return cls(
            reactor,
            allow_private=s.getbool("PTT_ALLOW_PRIVATE_HOSTS"),
            trusted=trusted,
            servers=s.getlist("PTT_DNS_SERVERS"),
            timeout_s=s.getfloat("DNS_TIMEOUT", 60.0),
        )

    def install_on_reactor(self) -> None:
        self.reactor.installNameResolver(self)

    def is_trusted(self, host: str) -> bool:
        return self.allow_private or host.lower() in self.trusted

    # ------------------------------------------------------------------ lookups

    def _lookup(self, host: str, port: int, address_types, semantics: str) -> defer.Deferred:
        """Deferred list of IAddress for ``host`` (upstream's answers, unjudged)."""
        if _is_literal(host):
            cls = IPv6Address if ":" in host else IPv4Address
            return defer.succeed([cls("TCP", host, port)])
        if self.names is not None:
            d = self.names.getHostByName(host, timeout=(self.timeout_s,))
            return d.addCallback(lambda ip: [IPv4Address("TCP", ip, port)])
        col = _Collector()
        self.upstream.resolveHostName(col, host, port, address_types, semantics)
        return col.done

    def judge(self, host: str, addresses: list) -> str | None:
        """``None`` when ``host`` may be connected to at ``addresses``, else the reason; remembered per host."""
        if not addresses:
            reason = "dns_error"
        elif self.is_trusted(host):
            reason = None
        else:
            reason = _first_block(addresses)
        self.verdicts[host.lower()] = reason
        if reason == "private_host":
            log.info("refused %s: it resolves to %s", host, ", ".join(a.host for a in addresses))
        return reason

    def block_reason(self, host: str, *, trusting: bool = True) -> defer.Deferred:
        """Deferred reason (or None) for ``host`` after a lookup of its own; what the image pipeline asks before
        queueing a download (the connection's own lookup is judged again). ``trusting=False`` judges the
        answers of the trusted base host too (an image URL on the board's own host)."""

        def judged(addrs):
            if trusting or self.allow_private or not addrs:
                return self.judge(host, addrs)
            return _first_block(addrs)

        d = self._lookup(host, 0, None, "TCP")
        d.addCallbacks(judged, lambda _f: self.judge(host, []))
        return d

    def resolveHostName(  # noqa: N802 - IHostnameResolver
        self, resolutionReceiver, hostName, portNumber=0, addressTypes=None, transportSemantics="TCP"
    ):
        resolution = _Resolution(hostName)
        resolutionReceiver.resolutionBegan(resolution)

        def deliver(addresses):
            if self.judge(hostName, addresses) is None:
                for a in addresses:
                    resolutionReceiver.addressResolved(a)
            resolutionReceiver.resolutionComplete()

        def failed(failure):
            self.judge(hostName, [])
            log.debug("lookup of %s failed: %s", hostName, failure.value)
            resolutionReceiver.resolutionComplete()

        self._lookup(hostName, portNumber, addressTypes, transportSemantics).addCallbacks(deliver, failed)
        return resolution


def installed_guard() -> GuardedResolver | None:
    """The reactor's resolver when it is a :class:`GuardedResolver` (None when another one is installed)."""
    reactor = sys.modules.get("twisted.internet.reactor")  # never install one just to ask
    resolver = getattr(reactor, "nameResolver", None)
    return resolver if isinstance(resolver, GuardedResolver) else None

"""Who a request comes from, and its rate: the client's key (the peer, or from a trusted proxy the
hop it did not add; an IPv6 address by its /64, an IPv4-mapped one as IPv4) and a token bucket per
(route class, client). Standard library only."""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import OrderedDict

from flaxdigits.serve.page.budgets import IPV6_PREFIX, MAX_CLIENTS, RATES


class RateLimiter:
    """Token buckets per (route class, client), the least recently used dropped past max_clients."""

    def __init__(self, rates=RATES, max_clients: int = MAX_CLIENTS, clock=time.monotonic):
        self.rates = dict(rates)
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: OrderedDict[tuple[str, str], list[float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, kind: str, client: str) -> float:
        """Take a token: 0.0 when granted, else the seconds until one is free."""
        rate = self.rates.get(kind)
        if rate is None:
            return 0.0
        now = self.clock()
        key = (kind, client)
        with self._lock:
            tokens, last = self._buckets.pop(key, (float(rate.burst), now))
            tokens = min(float(rate.burst), tokens + (now - last) * rate.per_second)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / rate.per_second
            self._buckets[key] = [tokens, now]
            while len(self._buckets) > self.max_clients * len(self.rates):
                self._buckets.popitem(last=False)
        return wait


def client_address(scope, trusted_proxies: frozenset[str]) -> str:
    """The client's key: the peer, or from a trusted proxy the last X-Forwarded-For hop it did
    not add; an IPv6 address as its /64 network, an IPv4-mapped one as the IPv4 address."""
    peer = (scope.get("client") or ("unknown", 0))[0]
    if peer not in trusted_proxies:
        return client_key(peer)
    forwarded = [
        value.decode("latin-1") for name, value in scope["headers"] if name == b"x-forwarded-for"
    ]
    hops = [h.strip() for h in ",".join(forwarded).split(",") if h.strip()]
    for hop in reversed(hops):  # the right-most hops are the ones our proxies wrote
        if hop in trusted_proxies:
            continue
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return client_key(peer)  # a hop that is no address: the chain cannot be trusted past it
        return client_key(hop)
    return client_key(peer)


def client_key(address: str) -> str:
    """One key per client: IPv4 as is, IPv4-mapped IPv6 as its IPv4, other IPv6 by its /64."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # no zone index: one host, one key
    except ValueError:
        return address  # not an address (a unix socket, "unknown"): its own key
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False))
    return str(ip)

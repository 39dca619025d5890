"""Which network addresses the server may be made to contact (callback URLs: SSRF protection).

A client names a URL; the server must not become its way into the server's own network. An
address is *refused* unless it is globally routable: loopback (127/8, ::1), private (10/8,
172.16/12, 192.168/16, fc00::/7), link-local (169.254/16 — cloud metadata — and fe80::/10),
shared (100.64/10), unspecified, reserved and multicast addresses are refused, and so are
IPv6 addresses that embed one of those (IPv4-mapped ``::ffff:127.0.0.1``, IPv4-compatible
``::127.0.0.1``, 6to4 ``2002:7f00:1::``). The operator's allow list
(``GPU_BACKTEST_CALLBACK_ALLOW``: CIDRs, addresses, host names) lets chosen ones through.

Host names are checked after resolution (`core/callbacks.py` resolves them with a resolver
that refuses such answers and connects only to the addresses it checked), and IP literals in
every spelling the C library accepts (``127.1``, ``0x7f000001``, ``2130706433``,
``0177.0.0.1``) are read as the addresses they mean.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from .errors import ConfigError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_COMPAT = ipaddress.ip_network("::/96")  # IPv4-compatible IPv6 (deprecated), incl. :: and ::1


@dataclass(frozen=True)
class AllowList:
    """Networks and host names allowed although not public (``GPU_BACKTEST_CALLBACK_ALLOW``)."""

    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = frozenset()

    def allows_host(self, host: str) -> bool:
        """True if ``host`` (a name, as written in the URL) is on the list by name."""
        return host.strip("[]").rstrip(".").lower() in self.hosts

    def allows_ip(self, ip: IPAddress) -> bool:
        return any(ip.version == n.version and ip in n for n in self.networks)


def parse_allow(raw: str, variable: str = "GPU_BACKTEST_CALLBACK_ALLOW") -> AllowList:
    """``10.0.0.0/8, 127.0.0.1, hooks.internal`` → `AllowList`; ConfigError naming ``variable``."""
    networks: list[IPNetwork] = []
    hosts: set[str] = set()
    for item in (raw or "").split(","):
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item.strip("[]"), strict=False))
            continue
        except ValueError:
            pass
        name = item.rstrip(".").lower()
        if "/" in name or not all(c.isalnum() or c in "-._" for c in name):
            raise ConfigError(f"{variable}: {item!r} is neither a CIDR, an address nor a host name",
                              {"variable": variable})
        hosts.add(name)
    return AllowList(tuple(networks), frozenset(hosts))


def literal_ip(host: str) -> IPAddress | None:
    """The address an IP-literal host means (any spelling ``inet_aton`` accepts), else None."""
    h = host.strip()
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    h = h.split("%", 1)[0]  # an IPv6 zone id
    try:
        return ipaddress.ip_address(h)
    except ValueError:
        pass
    if not h or not all(c in "0123456789abcdefxABCDEFX." for c in h):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(h))
    except OSError:
        return None


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _COMPAT and int(ip) > 1:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def why_refused(ip: IPAddress, allow: AllowList | None = None) -> str | None:
    """Why the server may not connect to ``ip`` (``"loopback"``, ``"link-local"``, …), or None."""
    if allow is not None and allow.allows_ip(ip):
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_v4(ip)
        if inner is not None:
            reason = why_refused(inner, allow)
            return None if reason is None else f"{reason} (embedded in {ip})"
    for attr, name in (("is_loopback", "loopback"), ("is_link_local", "link-local"),
                       ("is_unspecified", "unspecified"), ("is_multicast", "multicast"),
                       ("is_private", "private"), ("is_reserved", "reserved")):
        if getattr(ip, attr):
            return name
    if not ip.is_global:
        return "not globally routable"
    return None


def check_ip(ip: IPAddress, allow: AllowList | None, host: str) -> None:
    """Raise `RefusedAddress` when ``ip`` (what ``host`` means) may not be contacted."""
    reason = why_refused(ip, allow)
    if reason is not None:
        shown = host if host == str(ip) else f"{host} ({ip})"
        raise RefusedAddress(f"{shown} is a {reason} address; callbacks go to public addresses only "
                             "(GPU_BACKTEST_CALLBACK_ALLOW lists exceptions)")


class RefusedAddress(OSError):
    """The target's address may not be contacted (an OSError: the HTTP client reports it as a
    failed connection, before any byte is sent)."""


def strip_credentials(url: str) -> str:
    """``url`` without any ``user:password@`` part (what is shown, logged and sent)."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return url.rsplit("@", 1)[-1] if "@" in url else url
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def url_problem(url: str) -> str | None:
    """What is wrong with ``url`` as a URL the server will POST to, or None: it must be http(s),
    name a host and hold no credentials (``user:password@``)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return "must be an http(s) URL with a host"
    if "@" in parts.netloc:
        return ("must not hold credentials (user:password@); the X-Signature header authenticates "
                "callbacks")
    if any(c.isspace() or ord(c) < 32 for c in url):
        return "must not contain spaces or control characters"
    if any("\ud800" <= c <= "\udfff" for c in url):  # JSON's "\ud800": not UTF-8, so no database stores it
        return "must be Unicode text (no lone surrogates)"
    return None

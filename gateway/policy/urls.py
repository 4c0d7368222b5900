"""External image URLs (pure): the full syntax of an ``https`` URL, and private hosts.

Azure fetches an ``image_url`` itself, with its own network position: a URL the gateway lets
through is a request Azure makes for the caller. So the URL is checked in full, and nothing
is resolved (no DNS: the gateway must not fetch or look up caller-chosen names).

Syntax (RFC 3986, stricter where real image URLs never need the leeway):

* at most ``MAX_URL_CHARS``; only RFC 3986 characters (``A-Z a-z 0-9 -._~:/?#[]@!$&'()*+,;=``
  and ``%`` followed by two hex digits): no spaces, controls, backslashes or raw non-ASCII;
* ``https://`` then an authority without user information (no ``@``);
* the host is a DNS name (letters, digits and hyphens; labels of 1-63, not starting or
  ending with a hyphen; 253 at most; one trailing dot allowed), a dotted-quad IPv4 address
  (four decimal parts 0-255, no leading zeros) or a bracketed IPv6 address (no zone, no
  IPvFuture). A name whose last label is numeric (``2130706433``, ``0x7f.1``, ``127.1``,
  ``0177.0.0.1``) is refused: URL parsers read those as IPv4 in decimal, hex or octal;
* the port, if given, is 1-65535 without leading zeros.

Private hosts (``deny_private_image_urls``, defence in depth against SSRF through Azure):
IP literals in loopback, private, link-local, unique-local, CGNAT, multicast, unspecified,
reserved and documentation ranges (and anything else Python's ``ipaddress`` does not call
global), every IPv4-mapped IPv6 literal, Azure's platform address ``168.63.129.16``, and
IPv6 addresses embedding a private IPv4 address (IPv4-compatible, NAT64, 6to4, Teredo);
names that are one label (``intranet``) or end in a special-use or private-use suffix
(``localhost``, ``.local``, ``.internal``, ``.home.arpa``, ``.internal.cloudapp.net``, ...).
A public name that resolves to a private address is not caught here: that needs Azure's own
egress rules (the gateway resolves nothing).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_CHARS = 8192

_URL_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_AUTHORITY_END = re.compile(r"[/?#]")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_DOTTED_QUAD = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
_NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+")
_PORT = re.compile(r"[1-9][0-9]{0,4}")

_PRIVATE_V4 = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "168.63.129.16/32",  # Azure's platform endpoint (WireServer, DNS) inside every VNet
    )
)
_PRIVATE_V6 = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "::/8",
        "::ffff:0:0/96",
        "64:ff9b:1::/48",
        "100::/64",
        "2001::/23",
        "2001:db8::/32",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
#: Special-use (RFC 6761, 6762, 8375), ICANN private-use (``internal``), never-delegated
#: names used on private networks, and Azure's VNet-internal DNS suffix.
_PRIVATE_SUFFIXES = (
    "localhost",
    "local",
    "localdomain",
    "home.arpa",
    "internal",
    "intranet",
    "lan",
    "home",
    "corp",
    "internal.cloudapp.net",
)


class UrlError(ValueError):
    """The URL breaks a syntax rule (the message names which, never the value)."""


@dataclass(frozen=True, slots=True)
class HttpsUrl:
    #: Lower case, no brackets, no trailing dot.
    host: str
    ip: IPAddress | None
    port: int | None


def parse_https_url(url: str) -> HttpsUrl:
    """The host and port of an ``https://`` URL that passes every syntax rule above."""
    if len(url) > MAX_URL_CHARS:
        raise UrlError(f"An image URL may have at most {MAX_URL_CHARS} characters.")
    if not _URL_CHARS.fullmatch(url) or _BAD_ESCAPE.search(url):
        raise UrlError("An image URL may only contain URL characters and %-escapes.")
    if url[:8].lower() != "https://":
        raise UrlError("Image URLs must use https.")
    rest = url[8:]
    end = _AUTHORITY_END.search(rest)
    authority = rest[: end.start()] if end else rest
    if "@" in authority:
        raise UrlError("Image URLs must not contain user information.")
    host, port = _split_authority(authority)
    return HttpsUrl(*_host(host), port=_port(port))


def _split_authority(authority: str) -> tuple[str, str | None]:
    if authority.startswith("["):
        close = authority.find("]")
        if close < 0:
            raise UrlError("Malformed IPv6 address in an image URL.")
        host, after = authority[: close + 1], authority[close + 1 :]
        if after and not after.startswith(":"):
            raise UrlError("Malformed image URL host.")
        return host, after[1:] if after else None
    host, colon, port = authority.partition(":")
    if ":" in port or "[" in authority or "]" in authority:
        raise UrlError("Malformed image URL host.")
    return host, port if colon else None


def _port(text: str | None) -> int | None:
    if text is None:
        return None
    if not _PORT.fullmatch(text) or int(text) > 65535:
        raise UrlError("An image URL port must be between 1 and 65535.")
    return int(text)


def _host(text: str) -> tuple[str, IPAddress | None]:
    if text.startswith("["):
        inner = text[1:-1]
        if "%" in inner or inner[:1].lower() == "v":
            raise UrlError("Image URLs must not carry an IPv6 zone or a future address form.")
        try:
            return inner.lower(), ipaddress.IPv6Address(inner)
        except ValueError:
            raise UrlError("Malformed IPv6 address in an image URL.") from None
    host = text.lower()
    name = host[:-1] if host.endswith(".") else host
    if _DOTTED_QUAD.fullmatch(name):
        return name, ipaddress.IPv4Address(name)
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise UrlError("An image URL host must be a DNS name or an IP address.")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        raise UrlError("A numeric image URL host must be a dotted-quad IPv4 address.")
    return name, None


def is_private(url: HttpsUrl) -> bool:
    """True when the host is an internal address or name (see the module docstring)."""
    if url.ip is not None:
        return _private_ip(url.ip)
    if "." not in url.host:
        return True
    return url.host.endswith(tuple("." + s for s in _PRIVATE_SUFFIXES)) or (
        url.host in _PRIVATE_SUFFIXES
    )


def _private_ip(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv4Address):
        return any(ip in net for net in _PRIVATE_V4) or not ip.is_global or ip.is_multicast
    embedded = _embedded_v4(ip)
    if embedded is not None and _private_ip(embedded):
        return True
    return any(ip in net for net in _PRIVATE_V6) or not ip.is_global or ip.is_multicast


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]  # the client's address (the server's is public by definition)
    if ip in _NAT64 or int(ip) >> 32 == 0:  # NAT64, IPv4-compatible (::a.b.c.d)
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None

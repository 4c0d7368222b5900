"""External image URLs: full syntax, and the private-host switch (``deny_private_image_urls``).

Table-driven over the pure core (``gateway.policy_urls``), then through the message policy
(codes and params), per profile switch.
"""

from __future__ import annotations

import pytest

from gateway.errors import BadRequestError
from gateway.operations.apiversions import KNOWN_VERSIONS
from gateway.policy.checks import PolicyLimits
from gateway.policy.urls import MAX_URL_CHARS, UrlError, is_private, parse_https_url
from tests.policycases import check_request

V2 = KNOWN_VERSIONS["2024-05-01-preview"]
DEFAULT = PolicyLimits()
ALLOW_PRIVATE = PolicyLimits(deny_private_image_urls=False)

MALFORMED = [
    "https://a.example:99999/x.png",  # the port from the hostile run
    "https://a.example:65536/x.png",
    "https://a.example:0/x.png",
    "https://a.example:0443/x.png",
    "https://a.example:/x.png",
    "https://a.example:-1/x.png",
    "https://a.example:443:443/x.png",
    "https://a.example:8o/x.png",
    "https://user@a.example/x.png",
    "https://user:pw@a.example/x.png",
    "https://a.example@evil.example/x.png",
    "https://a.example%40evil.example/x.png",
    "https://a.example/x.png%zz",
    "https://a.example/x.png%4",
    "https://a.example/x y.png",
    "https://a.example/x\ty.png",
    "https://a.example/x\\y.png",
    "https://a.example/x\x00.png",
    "https://a.example/\u00e9.png",
    "https://ex\u0430mple.com/x.png",  # a Cyrillic a: raw non-ASCII host
    'https://a.example/x.png"onerror=',
    "https://a.example/<x>.png",
    "https://a.example/" + "x" * MAX_URL_CHARS,
    "https://",
    "https:///x.png",
    "https://./x.png",
    "https://a..example/x.png",
    "https://-a.example/x.png",
    "https://a-.example/x.png",
    "https://a_b.example/x.png",
    "https://" + "a" * 64 + ".example/x.png",
    "https://" + ".".join(["a" * 63] * 4) + "/x.png",
    # numeric hosts other than a dotted quad: decimal, hex and octal IPv4 spellings
    "https://2130706433/x.png",
    "https://0x7f000001/x.png",
    "https://0x7f.0.0.1/x.png",
    "https://0177.0.0.1/x.png",
    "https://127.1/x.png",
    "https://127.0.0.01/x.png",
    "https://1.2.3.4.5/x.png",
    "https://256.1.1.1/x.png",
    "https://a.example.123/x.png",
    # IPv6 literals
    "https://[::1/x.png",
    "https://::1/x.png",
    "https://[::1]x/x.png",
    "https://[fe80::1%25eth0]/x.png",
    "https://[v1.fe80::a]/x.png",
    "https://[12345::]/x.png",
    "https://[::1]:99999/x.png",
    "https://a[b].example/x.png",
]

PUBLIC = [
    ("https://a.example/x.png", "a.example", None),
    ("HTTPS://CDN.Example.COM:8443/i/x.png?w=1&h=2#frag", "cdn.example.com", 8443),
    ("https://example.com./x.png", "example.com", None),
    ("https://xn--bcher-kva.example/x.png", "xn--bcher-kva.example", None),
    ("https://a.example:443", "a.example", 443),
    ("https://a.example:65535/", "a.example", 65535),
    ("https://a.example/p%20q.png", "a.example", None),
    ("https://8.8.8.8/x.png", "8.8.8.8", None),
    ("https://[2606:4700::1111]/x.png", "2606:4700::1111", None),
    ("https://[2606:4700::1111]:8443/x.png", "2606:4700::1111", 8443),
    ("https://1e100.net/x.png", "1e100.net", None),
]

PRIVATE = [
    "https://localhost/x.png",
    "https://LOCALHOST./x.png",
    "https://app.localhost/x.png",
    "https://intranet/x.png",
    "https://printer.local/x.png",
    "https://db.svc.cluster.local/x",
    "https://metadata.google.internal/x",
    "https://nas.home.arpa/x",
    "https://box.lan/x",
    "https://vm1.abc.internal.cloudapp.net/x",
    "https://router.localdomain/x",
    "https://127.0.0.1/x.png",
    "https://127.255.255.254/x",
    "https://0.0.0.0/x",
    "https://10.1.2.3/x",
    "https://172.16.0.1/x",
    "https://172.31.255.255/x",
    "https://192.168.1.1/x",
    "https://169.254.169.254/latest/meta-data/",
    "https://100.64.0.1/x",
    "https://100.127.255.255/x",
    "https://224.0.0.1/x",
    "https://239.255.255.250/x",
    "https://255.255.255.255/x",
    "https://240.0.0.1/x",
    "https://192.0.0.8/x",
    "https://198.18.0.1/x",
    "https://168.63.129.16/x",
    "https://[::1]/x",
    "https://[::]/x",
    "https://[fe80::1]/x",
    "https://[fc00::1]/x",
    "https://[fd12:3456::1]/x",
    "https://[ff02::1]/x",
    "https://[fec0::1]/x",
    "https://[::ffff:127.0.0.1]/x",
    "https://[::ffff:7f00:1]/x",
    "https://[::ffff:8.8.8.8]/x",
    "https://[::ffff:169.254.169.254]/x",
    "https://[::127.0.0.1]/x",
    "https://[64:ff9b::a9fe:a9fe]/x",
    "https://[2002:7f00:1::]/x",
    "https://[2002:a00:1::]/x",
    "https://[2001:db8::1]/x",
    "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/x",
]


@pytest.mark.parametrize("url", MALFORMED)
def test_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(UrlError):
        parse_https_url(url)


@pytest.mark.parametrize(("url", "host", "port"), PUBLIC)
def test_wellformed_public_urls_parse(url: str, host: str, port: int | None) -> None:
    parsed = parse_https_url(url)
    assert (parsed.host, parsed.port) == (host, port)
    assert not is_private(parsed)


@pytest.mark.parametrize("url", PRIVATE)
def test_private_hosts_are_recognised(url: str) -> None:
    assert is_private(parse_https_url(url))


def test_urls_at_the_length_limit() -> None:
    base = "https://a.example/"
    assert parse_https_url(base + "x" * (MAX_URL_CHARS - len(base))).host == "a.example"
    with pytest.raises(UrlError):
        parse_https_url(base + "x" * (MAX_URL_CHARS - len(base) + 1))


def _message(url: str) -> dict[str, object]:
    return {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}


def _refusal(url: str, limits: PolicyLimits = DEFAULT) -> tuple[str, str | None]:
    with pytest.raises(BadRequestError) as info:
        check_request("messages.create", V2, _message(url), limits)
    return info.value.code, info.value.param


PARAM = "content[0].image_url.url"


@pytest.mark.parametrize("url", MALFORMED)
def test_the_policy_refuses_malformed_urls_whatever_the_switch(url: str) -> None:
    for limits in (DEFAULT, ALLOW_PRIVATE):
        assert _refusal(url, limits) == ("invalid_content_part", PARAM)


@pytest.mark.parametrize("url", PRIVATE)
def test_the_policy_refuses_private_hosts_by_default_and_the_switch_allows_them(url: str) -> None:
    assert _refusal(url) == ("content_part_not_allowed", PARAM)
    checked = check_request("messages.create", V2, _message(url), ALLOW_PRIVATE)
    assert checked is not None and checked["content"][0]["image_url"]["url"] == url


@pytest.mark.parametrize(("url", "host", "port"), PUBLIC)
def test_the_policy_forwards_public_urls_unchanged(url: str, host: str, port: int | None) -> None:
    checked = check_request("messages.create", V2, _message(url), DEFAULT)
    assert checked is not None and checked["content"][0]["image_url"]["url"] == url

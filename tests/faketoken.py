"""A fake Microsoft Entra token endpoint on loopback, over TLS with a private test CA.

azure-identity insists on an https authority, so the endpoint serves TLS with a certificate
for ``127.0.0.1`` signed by a CA made per test (``TestCA``); the gateway trusts that CA through
``upstream.entra.ca_file``. It answers ``POST /{tenant}/oauth2/v2.0/token`` as Entra does for
a workload-identity exchange (client credentials with a JWT client assertion), and checks:

* the tenant in the path and the ``client_id`` are the configured ones;
* ``grant_type = client_credentials``, the JWT-bearer assertion type and the ``scope``;
* the ``client_assertion`` is the projected token file's content at the time of the request
  (a rotated file must be read again).

Every request is recorded (``calls``, with what was wrong, if anything). It can be told to
fail (``fail_status``), to be slow (``delay_s``) and to issue short-lived tokens
(``lifetime_s``). ``valid(token)`` says whether a token it issued is unexpired: the fake
Azure accepts exactly those as ``Authorization: Bearer``.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.servers import ThreadedUvicorn

SCOPE = "https://cognitiveservices.azure.com/.default"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class TestCA:
    """A private CA and one server certificate for 127.0.0.1 (files under ``tmp``)."""

    __test__ = False  # not a pytest class

    def __init__(self, tmp: Path) -> None:
        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gateway test CA")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        self.ca_file = tmp / "test-ca.pem"
        self.cert_file = tmp / "token-endpoint.pem"
        self.key_file = tmp / "token-endpoint.key"
        self.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self.cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
        self.key_file.write_bytes(_pem_key(key))


@dataclass(frozen=True)
class TokenCall:
    tenant: str
    form: dict[str, str]
    at: float
    #: What was wrong with the request ("" when it was a good exchange).
    problem: str
    #: The token issued ("" when refused).
    issued: str = ""


@dataclass
class FakeTokenEndpoint:
    tenant_id: str
    client_id: str
    token_file: Path
    scope: str = SCOPE
    #: Lifetime of issued tokens (``expires_in``).
    lifetime_s: int = 3600
    #: Answer every request with this status (an Entra-shaped error) while set.
    fail_status: int | None = None
    #: Wait this long before answering.
    delay_s: float = 0.0
    calls: list[TokenCall] = field(default_factory=list)
    _issued: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.app = Starlette(
            routes=[Route("/{tenant}/oauth2/v2.0/token", self._token, methods=["POST"])]
        )

    # -- what the tests read

    def valid(self, token: str) -> bool:
        with self._lock:
            expires = self._issued.get(token)
        return expires is not None and time.time() < expires

    def good_calls(self) -> list[TokenCall]:
        with self._lock:
            return [c for c in self.calls if not c.problem]

    def count(self) -> int:
        with self._lock:
            return len(self.calls)

    # -- the endpoint

    def _check(self, tenant: str, form: dict[str, str]) -> str:
        expected = {
            "client_id": self.client_id,
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "scope": self.scope,
        }
        if tenant != self.tenant_id:
            return "tenant"
        for name, value in expected.items():
            if form.get(name) != value:
                return name
        if form.get("client_assertion") != self.token_file.read_text():
            return "client_assertion"
        return ""

    async def _token(self, request: Request) -> Response:
        tenant = request.path_params["tenant"]
        body = (await request.body()).decode("utf-8")
        form = dict(parse_qsl(body, keep_blank_values=True))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        now = time.time()
        if self.fail_status is not None:
            self._record(TokenCall(tenant, form, now, f"failing {self.fail_status}"))
            return _error(self.fail_status, "temporarily_unavailable", "AADSTS90033 unavailable")
        problem = self._check(tenant, form)
        if problem:
            self._record(TokenCall(tenant, form, now, problem))
            return _error(401, "invalid_client", f"AADSTS700016 bad {problem}")
        token = "entra-" + secrets.token_urlsafe(24)
        with self._lock:
            self._issued[token] = now + self.lifetime_s
        self._record(TokenCall(tenant, form, now, "", token))
        return JSONResponse(
            {
                "token_type": "Bearer",
                "expires_in": self.lifetime_s,
                "ext_expires_in": self.lifetime_s,
                "access_token": token,
            }
        )

    def _record(self, call: TokenCall) -> None:
        with self._lock:
            self.calls.append(call)


def _error(status: int, error: str, description: str) -> Response:
    body: dict[str, Any] = {"error": error, "error_description": description, "error_codes": [1]}
    return JSONResponse(body, status)


@contextmanager
def serving(endpoint: FakeTokenEndpoint, ca: TestCA) -> Iterator[str]:
    """Serve ``endpoint`` over TLS on loopback; yields its authority (``https://127.0.0.1:N``)."""
    with ThreadedUvicorn(
        endpoint.app,
        lifespan="off",
        ssl_certfile=str(ca.cert_file),
        ssl_keyfile=str(ca.key_file),
    ) as server:
        yield f"https://127.0.0.1:{server.port}"

"""TLS and the environment (checklist C11, C12): an upstream whose certificate the system trust
store does not vouch for is refused (502), and neither CA nor proxy settings in the
environment change where or how the gateway connects."""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.app import build
from gateway.config import parse
from gateway.upstream.credentials import ApiKeySource
from tests.fakeazure import FakeAzure
from tests.servers import ThreadedUvicorn
from tests.stack import PUBLIC_JWK, V2, base_config, deep_merge, make_token, running_stack


def self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "cert.pem", tmp / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.mark.parametrize("transport", ["h1", "aiohttp", "httpx"])
def test_untrusted_upstream_certificate_is_refused_whatever_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, transport: str
) -> None:
    cert_file, key_file = self_signed(tmp_path)
    # A pod environment trying to make the gateway trust another CA: ignored (were it
    # honoured, this self-signed upstream would be trusted and the request would pass).
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
    fake = FakeAzure("azure-key")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [PUBLIC_JWK]}))
    with ThreadedUvicorn(
        fake.app, lifespan="off", ssl_certfile=str(cert_file), ssl_keyfile=str(key_file)
    ) as upstream:
        endpoint = upstream.url.replace("http://", "https://")
        trusting = ssl.create_default_context(cafile=str(cert_file))
        with httpx.Client(verify=trusting, trust_env=False) as direct:
            assert (
                direct.get(
                    f"{endpoint}/openai/threads/thread_x", params={"api-version": V2}
                ).status_code
                == 401
            )  # TLS works
        fake.reset()
        config = parse(
            deep_merge(
                base_config(endpoint, str(jwks), None),
                {
                    "upstream": {"transport": transport, "allow_plain_http": False},
                    "threads": {"ownership": False},
                },
            )
        )
        gateway = build(config, api_key=ApiKeySource("azure-key"))
        with ThreadedUvicorn(gateway) as gw, httpx.Client(trust_env=False) as caller:
            response = caller.post(
                f"{gw.url}/openai/threads",
                params={"api-version": V2},
                json={},
                headers={"Authorization": f"Bearer {make_token()}"},
            )
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_unreachable"
    assert fake.requests == []  # the TLS handshake failed: not one byte of the request (or key)


@pytest.mark.parametrize("transport", ["h1", "aiohttp", "httpx"])
def test_proxy_settings_in_the_environment_are_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, transport: str
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens: honoured = 502
    monkeypatch.setenv("NO_PROXY", "")
    with (
        running_stack(tmp_path, overrides={"upstream": {"transport": transport}}) as gw,
        httpx.Client(trust_env=False) as caller,
    ):
        response = caller.post(
            f"{gw.url}/openai/threads", params={"api-version": V2}, json={}, headers=gw.auth()
        )
        assert response.status_code == 200
        assert len(gw.fake.requests) == 1

"""Token verification: one table covering section A of the security checklist (pure core +
the authenticator over a static key set; no network)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from gateway.auth.authenticator import Authenticator
from gateway.auth.caller import Caller
from gateway.auth.identity import CallerRule
from gateway.auth.jwks import StaticKeyProvider
from gateway.auth.tokens import AUTH_REASONS, IssuerPolicy, default_domain, extract_bearer
from gateway.errors import AuthenticationError, PermissionDeniedError

ISS = "https://kubernetes.default.svc.cluster.local"
AUD = "azure-openai-gateway"
NOW = 1_800_000_000.0
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()
PUBLIC_PEM = RSA_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)

POLICY = IssuerPolicy(
    issuer=ISS,
    audiences=frozenset({AUD}),
    algorithms=frozenset({"RS256"}),
    kubernetes=True,
    leeway_s=30,
)
RULES = (
    CallerRule("writer", namespaces=frozenset({"team-a"})),
    CallerRule("reader", claim=("groups", frozenset({"readers"}))),
)


def claims(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISS,
        "aud": [AUD],
        "sub": "system:serviceaccount:team-a:app",
        "iat": int(NOW),
        "nbf": int(NOW),
        "exp": int(NOW) + 600,
        "kubernetes.io": {"namespace": "team-a", "serviceaccount": {"name": "app", "uid": "x"}},
    }
    for key, value in over.items():
        if value is ...:
            base.pop(key, None)
        else:
            base[key] = value
    return base


def sign(
    payload: dict[str, Any] | None = None,
    *,
    key: Any = RSA_KEY,
    alg: str = "RS256",
    headers: dict[str, Any] | None = None,
) -> str:
    return jwt.encode(
        payload or claims(), key, algorithm=alg, headers={"kid": "k1", **(headers or {})}
    )


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    return ".".join(
        [b64(json.dumps(header).encode()), b64(json.dumps(payload).encode()), b64(signature)]
    )


def authenticator(clock: float = NOW, default_profile: str | None = None) -> Authenticator:
    keys = StaticKeyProvider.from_public_keys({"k1": RSA_KEY.public_key()}, algorithm="RS256")
    return Authenticator(
        {ISS: (POLICY, keys)},
        rules=RULES,
        default_profile=default_profile,
        max_token_bytes=8192,
        cache_size=100,
        clock=lambda: clock,
    )


def authenticate(header_value: bytes | list[bytes], **kw: Any) -> Caller:
    values = header_value if isinstance(header_value, list) else [header_value]
    return asyncio.run(authenticator(**kw).authenticate(values))


def bearer(token: str) -> bytes:
    return f"Bearer {token}".encode()


def hs256_with_public_key() -> str:
    header = {"alg": "HS256", "typ": "JWT", "kid": "k1"}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims()).encode())}"
    import hashlib
    import hmac

    mac = hmac.new(PUBLIC_PEM, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def tampered() -> str:
    head, body, sig = sign().split(".")
    flipped = bytearray(base64.urlsafe_b64decode(sig + "=="))
    flipped[10] ^= 1
    return f"{head}.{body}.{b64(bytes(flipped))}"


def swapped_payload() -> str:
    head, _, sig = sign().split(".")
    body = b64(json.dumps(claims(sub="system:serviceaccount:team-a:admin")).encode())
    return f"{head}.{body}.{sig}"


CASES: list[tuple[str, Any, str]] = [
    # A1 alg none in its spellings
    ("alg none", lambda: forge({"alg": "none", "kid": "k1"}, claims()), "bad_algorithm"),
    ("alg None", lambda: forge({"alg": "None", "kid": "k1"}, claims()), "bad_algorithm"),
    ("alg NONE", lambda: forge({"alg": "NONE", "kid": "k1"}, claims()), "bad_algorithm"),
    # A2 RS -> HS confusion with the public key as HMAC secret
    ("HS256 with RSA public key", hs256_with_public_key, "bad_algorithm"),
    # A3 algorithms off the list
    ("RS384 not configured", lambda: sign(alg="RS384"), "bad_algorithm"),
    ("PS256 not configured", lambda: sign(alg="PS256"), "bad_algorithm"),
    ("ES256 not configured", lambda: sign(key=EC_KEY, alg="ES256"), "bad_algorithm"),
    ("EdDSA not configured", lambda: sign(key=ED_KEY, alg="EdDSA"), "bad_algorithm"),
    # A4 malformed
    ("two segments", lambda: ".".join(sign().split(".")[:2]), "malformed_token"),
    ("four segments", lambda: sign() + ".abc", "malformed_token"),
    ("bad base64", lambda: "@@@." + sign().split(".", 1)[1], "malformed_token"),
    ("header not json", lambda: b64(b"nope") + "." + sign().split(".", 1)[1], "malformed_token"),
    ("header is a list", lambda: forge([1], claims()), "malformed_token"),  # type: ignore[arg-type]
    (
        "payload not object",
        lambda: forge({"alg": "RS256", "kid": "k1"}, [1]),  # type: ignore[arg-type]
        "malformed_token",
    ),
    (
        "non-utf8 payload",
        lambda: b64(json.dumps({"alg": "RS256"}).encode()) + "." + b64(b"\xff\xfe") + ".sig",
        "malformed_token",
    ),
    ("flipped signature bit", tampered, "bad_signature"),
    ("empty signature", lambda: sign().rsplit(".", 1)[0] + ".", "bad_signature"),
    ("payload swapped", swapped_payload, "bad_signature"),
    (
        "duplicate claims",
        lambda: (
            b64(json.dumps({"alg": "RS256", "kid": "k1"}).encode())
            + "."
            + b64(b'{"iss":"x","iss":"' + ISS.encode() + b'"}')
            + ".c2ln"
        ),
        "malformed_token",
    ),
    ("signed by another key", lambda: sign(key=OTHER_RSA), "bad_signature"),
    # A5 missing claims
    ("no exp", lambda: sign(claims(exp=...)), "missing_claim"),
    ("no iat", lambda: sign(claims(iat=...)), "missing_claim"),
    ("no iss", lambda: sign(claims(iss=...)), "missing_claim"),
    ("no aud", lambda: sign(claims(aud=...)), "missing_claim"),
    ("no sub", lambda: sign(claims(sub=...)), "missing_claim"),
    (
        "legacy secret token",
        lambda: sign({"iss": "kubernetes/serviceaccount", "sub": "system:serviceaccount:a:b"}),
        "unknown_issuer",
    ),
    # A6 time
    ("expired beyond leeway", lambda: sign(claims(exp=int(NOW) - 31)), "expired"),
    ("nbf in future", lambda: sign(claims(nbf=int(NOW) + 31)), "not_yet_valid"),
    ("iat in future", lambda: sign(claims(iat=int(NOW) + 31)), "not_yet_valid"),
    ("exp as string", lambda: sign(claims(exp=str(int(NOW) + 600))), "bad_claim"),
    ("exp as bool", lambda: sign(claims(exp=True)), "bad_claim"),
    ("nbf as float string", lambda: sign(claims(nbf="1.5")), "bad_claim"),
    # Numeric claims are bounded: a validly signed 400-digit exp/nbf/iat is a 401, not a 500
    ("exp of 400 digits", lambda: sign(claims(exp=10**400)), "bad_claim"),
    ("nbf of 400 digits", lambda: sign(claims(nbf=10**400)), "bad_claim"),
    ("iat of 400 digits", lambda: sign(claims(iat=10**400)), "bad_claim"),
    ("negative nbf of 400 digits", lambda: sign(claims(nbf=-(10**400))), "bad_claim"),
    ("exp past the year 5138", lambda: sign(claims(exp=10**11 + 1)), "bad_claim"),
    ("exp as a huge float", lambda: sign(claims(exp=1e300)), "bad_claim"),
    ("negative iat", lambda: sign(claims(iat=-1)), "bad_claim"),
    # A7 issuer
    ("issuer prefix", lambda: sign(claims(iss="https")), "unknown_issuer"),
    ("issuer substring", lambda: sign(claims(iss=ISS[:-1])), "unknown_issuer"),
    ("issuer with slash", lambda: sign(claims(iss=ISS + "/")), "unknown_issuer"),
    (
        "issuer not a string",
        lambda: forge({"alg": "RS256", "kid": "k1"}, claims(iss=["x"])),
        "bad_claim",
    ),
    # A8 audience
    (
        "kube default audience",
        lambda: sign(claims(aud=["https://kubernetes.default.svc"])),
        "bad_audience",
    ),
    ("other service audience", lambda: sign(claims(aud="other")), "bad_audience"),
    ("audience list with extra", lambda: sign(claims(aud=["other", AUD])), "bad_audience"),
    ("empty audience list", lambda: sign(claims(aud=[])), "bad_audience"),
    ("audience not string", lambda: sign(claims(aud=[1])), "bad_audience"),
    # A9 crit
    (
        "crit unknown extension",
        lambda: sign(headers={"crit": ["exp"], "exp": 1}),
        "malformed_token",
    ),
    # A10 kid injection
    ("kid path traversal", lambda: sign(headers={"kid": "../../dev/null"}), "unknown_kid"),
    ("kid sql", lambda: sign(headers={"kid": "' OR 1=1--"}), "unknown_kid"),
    ("kid 10KB", lambda: sign(headers={"kid": "k" * 10_000}), "token_too_large"),
    ("kid int", lambda: forge({"alg": "RS256", "kid": 7}, claims()), "malformed_token"),
    ("kid object", lambda: forge({"alg": "RS256", "kid": {"a": 1}}, claims()), "malformed_token"),
    ("kid null", lambda: forge({"alg": "RS256", "kid": None}, claims()), "malformed_token"),
    ("kid control chars", lambda: sign(headers={"kid": "k1\r\n"}), "unknown_kid"),
    # A11 jku / x5u / jwk / x5c are ignored: attacker key in the header does not verify
    (
        "embedded jwk",
        lambda: sign(
            key=OTHER_RSA,
            headers={
                "jwk": jwt.algorithms.RSAAlgorithm.to_jwk(OTHER_RSA.public_key(), as_dict=True)
            },
        ),
        "bad_signature",
    ),
    (
        "jku header",
        lambda: sign(key=OTHER_RSA, headers={"jku": "http://127.0.0.1:1/jwks"}),
        "bad_signature",
    ),
    (
        "x5u header",
        lambda: sign(key=OTHER_RSA, headers={"x5u": "http://127.0.0.1:1/x"}),
        "bad_signature",
    ),
    # A16 oversized
    ("64KB token", lambda: sign(claims(pad="x" * 65_536)), "token_too_large"),
    # K8s identity consistency
    (
        "sub disagrees with kubernetes.io",
        lambda: sign(claims(sub="system:serviceaccount:x:y")),
        "bad_claim",
    ),
    ("kubernetes.io missing", lambda: sign(claims(**{"kubernetes.io": ...})), "bad_claim"),
]


@pytest.mark.parametrize(
    ("token_factory", "reason"), [(f, r) for _, f, r in CASES], ids=[c[0] for c in CASES]
)
def test_refused_tokens(token_factory: Any, reason: str) -> None:
    assert reason in AUTH_REASONS
    with pytest.raises(AuthenticationError) as err:
        authenticate(bearer(token_factory()))
    assert err.value.reason == reason
    assert err.value.status == 401
    assert err.value.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    # The client-facing body never says which check failed.
    body = err.value.body()["error"]
    assert body["code"] == "invalid_token"
    assert reason not in (body["message"] or "")


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ([], "missing_token"),
        ([b"Bearer"], "malformed_header"),
        ([b"Bearer "], "malformed_header"),
        ([b"Basic dXNlcjpwYXNz"], "malformed_header"),
        ([b"Bearer a.b.c", b"Bearer a.b.c"], "duplicate_header"),
        ([b"Bearer \xff\xfe"], "malformed_header"),
        ([b"Bearer not-a-jwt"], "malformed_token"),
        ([b"Bearer " + b"a" * 9000], "token_too_large"),
        ([b"Bearer " + b"a" * 8_000_000], "token_too_large"),
    ],
)
def test_authorization_header_variants(values: list[bytes], reason: str) -> None:
    started = time.perf_counter()
    with pytest.raises(AuthenticationError) as err:
        extract_bearer(values, max_token_bytes=8192)
    assert err.value.reason == reason
    assert time.perf_counter() - started < 0.5


def test_scheme_is_case_insensitive_and_leeway_applies() -> None:
    token = sign(claims(exp=int(NOW) - 29))
    for scheme in ("Bearer", "bearer", "BEARER"):
        caller = authenticate(f"{scheme} {token}".encode())
        assert caller.id == "team-a/app"
        assert caller.tenant_name == "team-a"
        assert caller.tenant == f"{default_domain(ISS)}:team-a"  # qualified by its issuer
        assert caller.profile == "writer"


def test_audience_may_be_a_plain_string() -> None:
    assert authenticate(bearer(sign(claims(aud=AUD)))).profile == "writer"


def test_profiles_from_rules_and_default() -> None:
    other_ns = claims(
        sub="system:serviceaccount:team-z:app",
        **{"kubernetes.io": {"namespace": "team-z", "serviceaccount": {"name": "app"}}},
    )
    with pytest.raises(PermissionDeniedError) as err:
        authenticate(bearer(sign(other_ns)))
    assert err.value.code == "caller_not_allowed"
    assert authenticate(bearer(sign(other_ns)), default_profile="reader").profile == "reader"
    grouped = dict(other_ns, groups=["x", "readers"])
    assert authenticate(bearer(sign(grouped))).profile == "reader"


def test_verified_tokens_are_cached_until_exp() -> None:
    clock = [NOW]
    keys = StaticKeyProvider.from_public_keys({"k1": RSA_KEY.public_key()}, algorithm="RS256")
    auth = Authenticator(
        {ISS: (POLICY, keys)},
        rules=RULES,
        default_profile=None,
        max_token_bytes=8192,
        cache_size=2,
        clock=lambda: clock[0],
    )
    token = sign(claims(exp=int(NOW) + 100))

    async def run() -> None:
        first = await auth.authenticate([bearer(token)])
        assert len(auth.cache) == 1
        assert await auth.authenticate([bearer(token)]) is first
        clock[0] = NOW + 101  # past exp but inside the leeway: re-verified, still accepted
        assert (await auth.authenticate([bearer(token)])).id == first.id
        clock[0] = NOW + 131
        with pytest.raises(AuthenticationError) as err:
            await auth.authenticate([bearer(token)])
        assert err.value.reason == "expired"
        assert len(auth.cache) == 0

    asyncio.run(run())


def test_the_cache_is_keyed_by_the_header_value() -> None:
    """A cached token under another spelling of its header is verified again (the same
    caller, a second entry); header refusals stand whatever is cached."""
    auth = authenticator()
    token = sign()

    async def run() -> None:
        first = await auth.authenticate([bearer(token)])
        assert await auth.authenticate([bearer(token)]) is first
        other = await auth.authenticate([f"bearer  {token} ".encode()])
        assert other is not first and other == first
        assert len(auth.cache) == 2
        refusals = [
            ([], "missing_token"),
            ([bearer(token), bearer(token)], "duplicate_header"),
            ([bearer(token) + b"\xff"], "malformed_header"),
            ([f"Basic {token}".encode()], "malformed_header"),
            ([bearer(token + "." + "a" * 8192)], "token_too_large"),
            ([bearer(token + "a" * 8192)], "token_too_large"),
        ]
        for header, reason in refusals:
            with pytest.raises(AuthenticationError) as err:
                await auth.authenticate(header)
            assert err.value.reason == reason
        assert len(auth.cache) == 2

    asyncio.run(run())


def test_cache_is_bounded() -> None:
    auth = authenticator()
    auth.cache.max_entries = 3

    async def run() -> None:
        for i in range(10):
            await auth.authenticate([bearer(sign(claims(jti=str(i))))])
        assert len(auth.cache) == 3

    asyncio.run(run())

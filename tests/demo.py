"""The embedded demo: fake Azure + gateway on 127.0.0.1, a generated key pair, dev tokens.

It runs the production code path (``app.build`` on a config that ``check-config`` accepts);
only the parts around it are local: the upstream is the in-package fake Azure, the token
issuer is a key pair generated at start, and Redis is a private ``redis-server`` child when
one is installed (``tests.redischild``: it dies with the demo), else an in-process Redis that
runs the same Lua script (fakeredis, the ``demo`` extra). What it prints is a guided tour
(``tests.demotour``).

Each demo has a state directory of its own, ``<root>/<host>-<port>`` (the root:
``$GATEWAY_DEMO_DIR``, else ``$XDG_RUNTIME_DIR/assistants-gateway-demo``, else
``/tmp/assistants-gateway-demo-<uid>``), holding its key pair, config and a lock the demo holds
while it runs: a second demo on the same address is refused before it touches the first one's
keys, and ``gateway token`` finds the running demo (the only one, or the one on ``--port``).
The directory is removed when the demo stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import stat
import sys
import tempfile
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from pathlib import Path

import jwt
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.cli import _gateway, metrics_server, serve_with_metrics, uvicorn_config
from gateway.config import ConfigError, load
from gateway.ratelimit.redis_limiter import RedisClient
from tests.demotour import (
    DEMO_MODEL,
    TEAM_B_WRITE_BURST,
    TEAM_B_WRITES_PER_MINUTE,
    TENANT_A,
    TENANT_B,
    Tour,
    banner,
)
from tests.redischild import RedisChild, free_port, private_redis

DEMO_ISSUER = "https://demo-issuer.gateway.invalid"
DEMO_AUDIENCE = "azure-openai-gateway"
DEMO_KID = "demo-key-1"
DEFAULT_TTL_S = 3600


class DemoError(Exception):
    """A problem the user can fix, said in one sentence (printed without a traceback)."""


def state_root(environ: Mapping[str, str] = os.environ) -> Path:
    if explicit := environ.get("GATEWAY_DEMO_DIR"):
        return Path(explicit)
    runtime = environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "assistants-gateway-demo"
    return Path(tempfile.gettempdir()) / f"assistants-gateway-demo-{os.getuid()}"


def private_dir(path: Path) -> Path:
    """``path`` as a directory only this user can enter (made if missing): refuses one that
    another user made or could write to (the key pair lives below it)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise DemoError(
            f"{path} is not a private directory of this user (mode 0700, owned by uid "
            f"{os.getuid()}): remove it, or set GATEWAY_DEMO_DIR to another directory"
        )
    return path


@dataclass(frozen=True)
class DemoFiles:
    state_dir: Path

    @property
    def private_key(self) -> Path:
        return self.state_dir / "demo-signing-key.pem"

    @property
    def jwks(self) -> Path:
        return self.state_dir / "jwks.json"

    @property
    def config(self) -> Path:
        return self.state_dir / "gateway.toml"

    @property
    def api_key(self) -> Path:
        return self.state_dir / "azure-api-key"

    @property
    def token(self) -> Path:
        return self.state_dir / "token"

    @property
    def lock(self) -> Path:
        return self.state_dir / "lock"


def demo_files(host: str, port: int, root: Path | None = None) -> DemoFiles:
    return DemoFiles((root or state_root()) / f"{host}-{port}")


def _holder(lock: Path) -> str:
    with contextlib.suppress(OSError):
        return f" (pid {lock.read_text().strip()})"
    return ""


@contextlib.contextmanager
def claimed(files: DemoFiles) -> Generator[None, None, None]:
    """Hold the demo's lock for its life; remove the state directory at the end."""
    private_dir(files.state_dir.parent)
    private_dir(files.state_dir)
    fd = os.open(files.lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DemoError(
                f"another `gateway demo` is running on this address{_holder(files.lock)}, "
                f"state {files.state_dir}: stop it, or choose another --port"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        try:
            yield
        finally:
            shutil.rmtree(files.state_dir, ignore_errors=True)
    finally:
        os.close(fd)


def is_running(files: DemoFiles) -> bool:
    """Whether a demo holds this state directory's lock (and its config exists)."""
    if not files.config.is_file():
        return False
    try:
        fd = os.open(files.lock, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def running_demos(root: Path) -> list[DemoFiles]:
    if not root.is_dir():
        return []
    found = (DemoFiles(d) for d in sorted(root.iterdir()) if d.is_dir())
    return [f for f in found if is_running(f)]


def generate_keys(files: DemoFiles) -> None:
    """A fresh RSA-2048 key pair, its JWK Set, and a random fake-Azure key, private to us."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_private(
        files.private_key,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update({"kid": DEMO_KID, "alg": "RS256", "use": "sig"})
    files.jwks.write_text(json.dumps({"keys": [jwk]}))
    _write_private(files.api_key, secrets.token_urlsafe(32).encode())


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def in_process_redis() -> RedisClient:
    """An in-process Redis that runs Lua (fakeredis with lupa: the ``demo`` extra), for a
    machine without ``redis-server``: the limiter's own script runs on it unchanged."""
    try:
        import fakeredis
    except ImportError:
        raise DemoError(
            "gateway demo needs a Redis: install redis-server (Debian/Ubuntu: apt-get install "
            "redis-server) or the in-process one: pip install -e '.[demo]'"
        ) from None
    client: RedisClient = fakeredis.FakeAsyncRedis()
    return client


def demo_config_text(
    files: DemoFiles,
    *,
    upstream_url: str,
    redis_url: str | None,
    host: str,
    port: int,
    metrics_port: int,
) -> str:
    return f"""# Generated by `gateway demo`. Not for production: demo = true.
demo = true

[server]
host = "{host}"
port = {port}
metrics_host = "127.0.0.1"
metrics_port = {metrics_port}
overhead_header = true

[upstream]
endpoint = "{upstream_url}"
allow_plain_http = true
api_key_file = "{files.api_key}"

[redis]
url = "{redis_url or "redis://127.0.0.1:6379/0"}"

[rate_limit]
enabled = true
fail_mode = "open"

[[auth.issuers]]
issuer = "{DEMO_ISSUER}"
audiences = ["{DEMO_AUDIENCE}"]
algorithms = ["RS256"]
kubernetes = true
jwks_file = "{files.jwks}"

# Two tenants (Kubernetes namespaces), a profile each.
[[auth.callers]]
profile = "demo"
namespaces = ["{TENANT_A}"]

[[auth.callers]]
profile = "team-b"
namespaces = ["{TENANT_B}"]

[profiles.demo]
operations = ["*"]

[profiles.demo.policy]
models = ["{DEMO_MODEL}"]

[profiles.demo.rate_limit]
max_concurrent = 20

[profiles.demo.rate_limit.per_caller.read]
requests = 600
per_seconds = 60
burst = 100

[profiles.demo.rate_limit.per_caller.write]
requests = 120
per_seconds = 60
burst = 20

[profiles.team-b]
operations = ["*"]

[profiles.team-b.policy]
models = ["{DEMO_MODEL}"]

[profiles.team-b.rate_limit.per_caller.read]
requests = 600
per_seconds = 60
burst = 100

[profiles.team-b.rate_limit.per_caller.write]
requests = {TEAM_B_WRITES_PER_MINUTE}
per_seconds = 60
burst = {TEAM_B_WRITE_BURST}
"""


def mint_token(
    private_key_pem: bytes,
    *,
    namespace: str = TENANT_A,
    service_account: str = "demo-app",
    ttl_s: int = DEFAULT_TTL_S,
    audience: str = DEMO_AUDIENCE,
    now: float | None = None,
) -> str:
    """A Kubernetes-shaped projected service-account token signed with the demo key."""
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": DEMO_ISSUER,
        "aud": [audience],
        "sub": f"system:serviceaccount:{namespace}:{service_account}",
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl_s,
        "kubernetes.io": {
            "namespace": namespace,
            "serviceaccount": {"name": service_account, "uid": secrets.token_hex(8)},
        },
    }
    return jwt.encode(claims, private_key_pem, algorithm="RS256", headers={"kid": DEMO_KID})


def gateway_command() -> str:
    """How a shell runs this installation's ``gateway``: its name when the PATH finds this
    one, else its path (``./dev demo`` runs it without activating the environment)."""
    ours = Path(sys.executable).parent / "gateway"
    found = shutil.which("gateway")
    if found is not None and Path(found).resolve() == ours.resolve():
        return "gateway"
    return str(ours) if ours.is_file() else f"{sys.executable} -m gateway"


def redis_line(child: RedisChild | None) -> str:
    if child is None:
        return "Redis: in-process (fakeredis, the same Lua script): redis-server is not installed"
    return f"Redis: a private redis-server child (pid {child.pid}), stopped with the demo"


class SignalFreeServer(uvicorn.Server):
    """The fake Azure's server: it leaves signals to the gateway's server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def _run_demo(files: DemoFiles, host: str, port: int, metrics_port: int) -> None:
    from tests.fakeazure import FakeAzure

    generate_keys(files)
    fake = FakeAzure(files.api_key.read_text().strip())
    upstream_port = free_port()
    fake_server = SignalFreeServer(
        uvicorn.Config(
            fake.app, host="127.0.0.1", port=upstream_port, log_level="warning", lifespan="off"
        )
    )
    with private_redis() as child:
        redis_url = None if child is None else child.url
        files.config.write_text(
            demo_config_text(
                files,
                upstream_url=f"http://127.0.0.1:{upstream_port}",
                redis_url=redis_url,
                host=host,
                port=port,
                metrics_port=metrics_port,
            )
        )
        config = load(str(files.config), environ={})
        gateway = _gateway(config, None if child else in_process_redis())
        fake_task = asyncio.create_task(fake_server.serve())
        server = uvicorn.Server(uvicorn_config(gateway, host, port, config))
        key = files.private_key.read_bytes()
        _write_private(files.token, mint_token(key).encode())
        tour = Tour(
            gateway_url=f"http://{host}:{port}",
            metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
            token_a=files.token.read_text(),
            token_b=mint_token(key, namespace=TENANT_B),
            token_file=str(files.token),
            state_dir=str(files.state_dir),
            python=sys.executable,
            gateway_command=gateway_command(),
            redis=redis_line(child),
        )

        async def announce() -> None:
            while not server.started:  # uvicorn has no event to wait on
                await asyncio.sleep(0.05)
            print(banner(tour), flush=True)

        announcer = asyncio.create_task(announce())
        try:
            await serve_with_metrics(server, metrics_server(gateway, config))
        finally:
            announcer.cancel()
            fake_server.should_exit = True
            await fake_task


def run(host: str, port: int, metrics_port: int | None) -> int:
    """``gateway demo``: serve until Ctrl-C or SIGTERM (both unwind the same way: the redis
    child and the state directory go; a crash leaves the child to ``PR_SET_PDEATHSIG``)."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    files = demo_files(host, port)
    try:
        with claimed(files), contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_run_demo(files, host, port, metrics_port or free_port()))
    except DemoError as exc:
        print(f"gateway demo: {exc}", file=sys.stderr)
        return 1
    return 0


def _find_demo(port: int | None) -> DemoFiles:
    root = state_root()
    running = running_demos(root)
    if port is not None:
        chosen = [f for f in running if f.state_dir.name.rsplit("-", 1)[-1] == str(port)]
    else:
        chosen = running
    if len(chosen) == 1:
        return chosen[0]
    listed = ", ".join(f.state_dir.name for f in running) or "none"
    if not chosen:
        where = f"on port {port}" if port is not None else "running"
        raise DemoError(f"no `gateway demo` {where} (under {root}; running: {listed})")
    raise DemoError(f"several demos are running ({listed}): choose one with --port")


def token_command(
    config: str | None, *, port: int | None, namespace: str, service_account: str, ttl_s: int
) -> int:
    """``gateway token``: a token signed by a running demo's key (demo configs only)."""
    try:
        files = DemoFiles(Path(config).parent) if config else _find_demo(port)
        demo = load(str(config or files.config), environ={}).demo
        key = files.private_key.read_bytes() if demo else b""
    except (DemoError, ConfigError, OSError) as exc:
        print(f"gateway token: {exc}", file=sys.stderr)
        return 1
    if not demo:
        print(
            "gateway token: refusing: it mints tokens for demo configs (demo = true) only",
            file=sys.stderr,
        )
        return 2
    print(mint_token(key, namespace=namespace, service_account=service_account, ttl_s=ttl_s))
    return 0

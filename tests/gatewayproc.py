"""``gateway serve`` as a real child process, for tests that need several replicas or a kill.

The config is the same dict the in-process stack uses (``tests.stack.base_config`` plus
overrides), written as TOML; the Azure key, the Redis URL and the port come from the
environment, as in a deployment. The child listens on loopback only and logs to a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string (ASCII escapes are the same)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


def to_toml(data: Mapping[str, Any]) -> str:
    """A config dict as TOML: one root-level line per top-level key, inline tables below."""
    return "".join(f"{_toml_key(k)} = {_toml_value(v)}\n" for k, v in data.items())


def write_config(config: Mapping[str, Any], path: Path) -> Path:
    """Write ``config`` (a ``tests.stack.base_config``-style dict) for a loopback-only child."""
    data = {k: dict(v) if isinstance(v, Mapping) else v for k, v in config.items()}
    data["server"] = {**data.get("server", {}), "host": "127.0.0.1"}
    path.write_text(to_toml(data))
    return path


class GatewayProcess:
    """One ``python -m gateway.cli serve`` child on a free loopback port."""

    def __init__(
        self, config_path: Path, *, api_key: str, redis_url: str, name: str = "gw"
    ) -> None:
        self.port = free_port()
        self.config_path = config_path
        self.log_path = config_path.with_name(f"{name}.log")
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(ROOT),
            "AZURE_OPENAI_API_KEY": api_key,
            "REDIS_URL": redis_url,
            "GATEWAY_PORT": str(self.port),
            "GATEWAY_LOG_LEVEL": "WARNING",
        }
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GatewayProcess:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "serve", "--config", str(self.config_path)],
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise TimeoutError(f"gateway not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def kill(self) -> None:
        """SIGKILL: no shutdown, no lease release (a crashed replica)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=5)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()


@contextlib.contextmanager
def gateway_processes(
    config: Mapping[str, Any], workdir: Path, count: int, *, api_key: str, redis_url: str
) -> Iterator[list[GatewayProcess]]:
    """``count`` replicas of one config, started together, all ready on entry."""
    path = write_config(config, workdir / "gateway.toml")
    procs = [
        GatewayProcess(path, api_key=api_key, redis_url=redis_url, name=f"gw{i}")
        for i in range(count)
    ]
    try:
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.wait_ready()
        yield procs
    finally:
        for proc in procs:
            proc.stop()


@contextlib.contextmanager
def served(
    workdir: Path,
    redis_url: str,
    *,
    env: Mapping[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
    **server: Any,
) -> Iterator[tuple[Any, GatewayProcess]]:
    """A recording fake Azure and one ready ``gateway serve`` child in front of it;
    ``server`` overrides keys of the config's ``[server]`` table, ``overrides`` is merged
    into the whole config, ``env`` into the child's environment (``GATEWAY_LOG_LEVEL``...)."""
    from tests.fakeazure import FakeAzure
    from tests.servers import ThreadedUvicorn
    from tests.stack import PUBLIC_JWK, base_config, deep_merge

    fake = FakeAzure("azure-key")
    jwks = workdir / "jwks.json"
    jwks.write_text(json.dumps({"keys": [PUBLIC_JWK]}))
    with ThreadedUvicorn(fake.app, lifespan="off") as upstream:
        config = deep_merge(base_config(upstream.url, str(jwks), redis_url), overrides or {})
        config["server"] = {**config["server"], **server}
        proc = GatewayProcess(
            write_config(config, workdir / "gateway.toml"), api_key="azure-key", redis_url=redis_url
        )
        proc.env.update(env or {})
        proc.start()
        try:
            proc.wait_ready()
            yield fake, proc
        finally:
            proc.stop()

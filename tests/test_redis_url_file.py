"""``redis.url_file``: the Redis URL (with the ACL user's password) from a mounted file.

The Deployment mounts Secret ``assistants-gateway-redis`` as a file instead of putting the URL
in an environment variable (readable in ``/proc/<pid>/environ``, ``kubectl describe`` output
and crash dumps). ``gateway serve`` reads the file once at start and uses its URL instead of
``redis.url`` and ``REDIS_URL`` (which still works where no file is configured);
``check-config`` does not read it. A problem with the file never shows its content.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import redis

from gateway.config import ConfigError, load, read_redis_url
from tests.gatewayproc import served, to_toml
from tests.servers import private_redis
from tests.stack import V2, make_token
from tests.test_redis_acl import acl_log, apply_acl, readme_acl_line, user_url

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = {
    "upstream": {"endpoint": "https://example.openai.azure.com"},
    "auth": {
        "issuers": [{"issuer": "https://iss", "audiences": ["gw"], "jwks_url": "https://iss/jwks"}]
    },
    "profiles": {"p": {"operations": ["*"]}},
}
#: Nothing listens there: a gateway that used it could not pass readiness (fail closed).
UNUSED = "redis://127.0.0.1:1/0"


def write(tmp_path: Path, url_file: Path) -> Path:
    config = tmp_path / "gateway.toml"
    config.write_text(
        to_toml(
            {
                **MINIMAL,
                "redis": {"url": "rediss://placeholder.invalid:6380/0", "url_file": str(url_file)},
            }
        )
    )
    return config


def test_the_file_s_url_replaces_url_and_redis_url(tmp_path: Path) -> None:
    secret = tmp_path / "url"
    secret.write_text("rediss://gateway:s3cret@redis.example:6380/2\n")  # a Secret's newline
    config = load(str(write(tmp_path, secret)), environ={"REDIS_URL": "redis://env:6379/0"})
    assert config.redis.url == "redis://env:6379/0"  # not read yet: check-config stays pure
    assert read_redis_url(config).redis.url == "rediss://gateway:s3cret@redis.example:6380/2"


def test_without_a_file_redis_url_still_works(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(to_toml(MINIMAL))
    config = read_redis_url(load(str(path), environ={"REDIS_URL": "rediss://r:6380/1"}))
    assert config.redis.url == "rediss://r:6380/1"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "redis.url_file: cannot read {path}: No such file or directory"),
        ("", "redis.url_file: {path} is empty"),
        ("  \n", "redis.url_file: {path} is empty"),
        ("http://gateway:s3cret@r:80/0", "must hold one redis://, rediss:// or unix:// URL"),
        ("rediss://gateway:s3cret@r:6380/0\nrediss://x:6380/0", "must hold one redis://"),
        ("rediss://gateway:s3cret@r:6380/0 extra", "must hold one redis://"),
    ],
)
def test_a_bad_file_is_refused_without_showing_its_content(
    tmp_path: Path, content: str | None, expected: str
) -> None:
    secret = tmp_path / "url"
    if content is not None:
        secret.write_text(content)
    config = load(str(write(tmp_path, secret)), environ={})
    with pytest.raises(ConfigError) as caught:
        read_redis_url(config)
    (line,) = caught.value.problems
    assert expected.format(path=secret) in line
    assert "s3cret" not in line


def test_check_config_does_not_read_the_file(tmp_path: Path) -> None:
    """The deploy/ configs name the Secret's mount path, absent on a developer's machine."""
    path = write(tmp_path, tmp_path / "missing")
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check-config", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_serve_refuses_to_start_on_an_unreadable_file(tmp_path: Path) -> None:
    path = write(tmp_path, tmp_path / "missing")
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(path)],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "AZURE_OPENAI_API_KEY": "k"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "redis.url_file: cannot read" in result.stderr


def test_serve_connects_with_the_file_s_credentials(tmp_path: Path) -> None:
    """A real ``gateway serve`` child whose ``REDIS_URL`` and ``redis.url`` lead nowhere, and
    whose ``url_file`` holds the README's ACL user with its password: readiness (fail closed:
    it needs Redis) passes, the limiter and the ownership store write as that user, and
    Redis's ACL log stays empty."""
    with private_redis() as server:
        apply_acl(server, readme_acl_line())
        secret = tmp_path / "redis-url"
        secret.write_text(user_url(server) + "\n")
        overrides = {
            "redis": {"url_file": str(secret), "socket_timeout_s": 1.0, "connect_timeout_s": 1.0},
            "rate_limit": {"enabled": True, "fail_mode": "closed", "budget_s": 1.0},
            "threads": {"ownership": True, "unknown": "deny"},
            "profiles": {
                "writer": {
                    "rate_limit": {
                        "per_caller": {"write": {"requests": 5, "per_seconds": 60, "burst": 5}}
                    }
                }
            },
        }
        with served(tmp_path, UNUSED, overrides=overrides) as (_fake, proc):
            assert proc.env["REDIS_URL"] == UNUSED
            ready = httpx.get(f"{proc.url}/readyz", timeout=5)
            assert ready.status_code == 200, ready.text
            created = httpx.post(
                f"{proc.url}/openai/threads",
                params={"api-version": V2},
                json={},
                headers={"Authorization": f"Bearer {make_token('team-a')}"},
                timeout=10,
            )
            assert created.status_code == 200, created.text
            assert created.headers["ratelimit-policy"]
        admin = redis.Redis(host=server.host, port=server.port)
        try:
            assert admin.dbsize() > 0  # limiter and ownership keys, written as the ACL user
        finally:
            admin.close()
        assert acl_log(server) == []

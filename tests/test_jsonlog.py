"""Every log line is one JSON object with time, level, logger, message and the request id.

Checked on the real stderr of ``gateway serve`` (not ``caplog``: a format string that drops
``extra`` only shows there), and on the formatter itself.
"""

from __future__ import annotations

import contextvars
import json
import logging
import socket
import subprocess
import sys
from pathlib import Path
from types import MappingProxyType
from typing import Any

import httpx

from gateway.context import current_request_id
from gateway.observability.jsonlog import JsonFormatter, level_from
from tests.gatewayproc import ROOT, served, write_config
from tests.servers import free_port
from tests.stack import PUBLIC_JWK, V2, base_config, make_token

BASE_KEYS = {"time", "level", "logger", "message"}


def parse_lines(text: str) -> list[dict[str, Any]]:
    """Every line as a JSON object with the base keys (fails on any other line)."""
    lines = []
    for raw in text.splitlines():
        line = json.loads(raw)
        assert isinstance(line, dict), raw
        assert set(line) >= BASE_KEYS, raw
        assert isinstance(line["time"], float) and isinstance(line["message"], str), raw
        lines.append(line)
    return lines


def test_every_stderr_line_of_gateway_serve_is_json_with_the_request_id(tmp_path: Path) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"  # every Redis call fails: lines to log
    with served(
        tmp_path,
        dead_redis,
        env={"GATEWAY_LOG_LEVEL": "DEBUG"},
        overrides={"threads": {"ownership": True, "unknown": "deny"}},
    ) as (_, proc):
        auth = {"Authorization": f"Bearer {make_token()}"}
        created = httpx.post(
            f"{proc.url}/openai/threads",
            params={"api-version": V2},
            json={},
            headers={**auth, "x-request-id": "log-create"},
            timeout=5,
        )
        assert created.status_code == 200  # fail_mode "open": admitted, flagged degraded
        owned = httpx.get(
            f"{proc.url}/openai/threads/thread_abc123/messages",
            params={"api-version": V2},
            headers={**auth, "x-request-id": "log-owner"},
            timeout=5,
        )
        # Redis cannot answer: the owner is looked up at Azure, which has no such thread.
        assert owned.status_code == 404
        with socket.create_connection(("127.0.0.1", proc.port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 400")
    text = proc.log_path.read_text()
    lines = parse_lines(text)
    loggers = {line["logger"] for line in lines}
    assert {"uvicorn.error", "gateway.access", "gateway.cli"} <= loggers, loggers
    by_id: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        by_id.setdefault(line.get("request_id", ""), []).append(line)
    # The access lines, and lines written inside a request with or without an ``extra``:
    # the proxy passes one, the ownership adapter none (the request's context has the id).
    create_lines = {ln["logger"]: ln["message"] for ln in by_id["log-create"]}
    assert create_lines["gateway.proxy"].startswith("owner of a new thread not recorded in Redis")
    assert create_lines["gateway.ownership"].startswith("ownership record write failed")
    assert "gateway.access" in create_lines
    owner_lines = by_id["log-owner"]
    assert any(
        ln["logger"] == "gateway.ownership"
        and ln["message"].startswith("ownership record lookup failed")
        for ln in owner_lines
    )
    [access] = [ln for ln in owner_lines if ln["logger"] == "gateway.access"]
    assert access["status"] == 404 and access["operation"] == "messages.list"
    # Lines outside any request have no id; the invalid request is uvicorn's own warning.
    started = next(ln for ln in lines if ln["message"].startswith("Started server process"))
    assert "request_id" not in started
    assert any(ln["message"] == "Invalid HTTP request received." for ln in lines)
    assert "Traceback" not in text


def test_an_uncaught_exception_is_one_json_line_with_its_traceback(tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [PUBLIC_JWK]}))
    config = base_config("http://127.0.0.1:1", str(jwks), None)
    issuer = config["auth"]["issuers"][0]
    del issuer["jwks_file"]
    issuer["public_key_file"] = str(tmp_path / "missing.pem")  # read when the app is built
    path = write_config(config, tmp_path / "gateway.toml")
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(path)],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "AZURE_OPENAI_API_KEY": "k", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0
    assert done.stdout == ""
    [line] = parse_lines(done.stderr)
    assert line["level"] == "CRITICAL" and line["logger"] == "gateway.uncaught"
    assert line["exception"]["type"] == "KeySetError"
    assert line["exception"]["traceback"].startswith("Traceback (most recent call last):")
    assert "FileNotFoundError" in line["exception"]["traceback"]  # the chained cause


def test_a_config_error_is_a_json_line_listing_the_problems(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text("[server]\nport = 0\nbody_timeout_s = 0\n")
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(path)],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    [line] = parse_lines(done.stderr)
    assert line["level"] == "ERROR" and line["message"].startswith("invalid configuration")
    assert "server.port: must be between 1 and 65535" in line["problems"]
    assert "server.body_timeout_s: must be > 0" in line["problems"]


def _record(message: str, *args: object, **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("lib.x", logging.WARNING, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    return record


def test_formatter_fields_request_id_and_exceptions() -> None:
    fmt = JsonFormatter()
    plain = json.loads(fmt.format(_record("a %s b", "x", color_message="\x1b[1m")))
    assert plain == {
        "time": plain["time"],
        "level": "WARNING",
        "logger": "lib.x",
        "message": "a x b",
    }  # other ``extra`` (uvicorn's color_message) stays out

    def inside_a_request() -> dict[str, Any]:
        current_request_id.set("rid-ctx")
        return dict(json.loads(fmt.format(_record("m"))))

    assert contextvars.Context().run(inside_a_request)["request_id"] == "rid-ctx"
    assert "request_id" not in json.loads(fmt.format(_record("m")))  # the context did not leak
    explicit = json.loads(fmt.format(_record("m", request_id="rid-extra")))
    assert explicit["request_id"] == "rid-extra"
    fields = json.loads(fmt.format(_record("access", fields={"status": 200, "odd": {1, 2}})))
    assert fields["status"] == 200 and fields["odd"] == "{1, 2}"
    proxied = json.loads(fmt.format(_record("access", fields=MappingProxyType({"status": 201}))))
    assert proxied["status"] == 201  # any Mapping, not only a dict
    listed = json.loads(fmt.format(_record("access", fields=[("status", 202)])))
    assert "status" not in listed  # not a Mapping: nothing of it is written

    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        record = _record("failed")
        record.exc_info = sys.exc_info()
    text = fmt.format(record)
    assert "\n" not in text
    exception = json.loads(text)["exception"]
    assert exception["type"] == "ValueError" and exception["message"] == "bad\nvalue"
    assert exception["traceback"].endswith("ValueError: bad\nvalue")
    assert "raise ValueError" in exception["traceback"]


def test_log_level_names() -> None:
    assert level_from(None) == (logging.INFO, None)
    assert level_from("debug") == (logging.DEBUG, None)
    level, problem = level_from("LOUD")
    assert level == logging.INFO and problem is not None and "LOUD" in problem

"""Proof against a real Prometheus: the dashboard and the alert rules query series that exist.

A private ``prometheus`` process (loopback, its own free port, a temporary storage dir,
1 s scrape and evaluation interval, the repository's rule file loaded) scrapes a running
gateway's metrics listener while a short burst of mixed traffic goes through the gateway:
successes, a refusal of each kind (401, 403, 400 policy, 404 route, 429 rate limit) and
upstream errors (scripted 500 and 502 from Azure, a stream cut mid-way).

Then, through the HTTP API (``/api/v1/query``):

* every target of every panel in ``deploy/grafana-dashboard.json`` (Grafana's
  ``$__rate_interval`` read as ``1m``) must return a non-empty result;
* every alert expression must be valid, and its *underlying series* must be non-empty. The
  rule file keeps one convention so that this can be checked while the alerts (rightly) do
  not fire: every comparison is against a number literal. Removing each ``<op> <number>``
  leaves the series the alert watches (``A / B > 0.05`` → ``A / B``; ``A > 0 and B == 0`` →
  ``A and B``); no ``or vector(0)`` is used or added. Counters with fixed label sets start at 0
  so those series exist before the first failure;
* Prometheus reports every loaded rule healthy.

``promtool check rules`` must pass on the rule file and ``promtool check metrics`` must find no
problem in a real scrape. Without ``prometheus``/``promtool`` on the PATH the test fails and
says how to install them (CI installs the Debian package in ``.ci/run``).
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.entrastack import running_entra_stack
from tests.fakeazure import ScriptedResponse
from tests.servers import ThreadedUvicorn, free_port
from tests.stack import V2, Stack, running_stack

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana-dashboard.json"
RULES = ROOT / "deploy" / "prometheus-rules.yaml"
#: Series only an Entra credential exports: their rules are proven on an Entra stack
#: (``test_token_alerts_fire_on_a_real_prometheus``), not on the API-key stack.
ENTRA_SERIES = "gateway_upstream_token_"
_COMPARISON = re.compile(r"\s*(?:==|!=|>=|<=|>|<)\s*(?:bool\s+)?-?(?:\d+\.?\d*|\.\d+)(?:e-?\d+)?")

TIGHT = {
    "auth": {
        "callers": [
            {"profile": "reader", "namespaces": ["readers"]},
            {"profile": "tight", "namespaces": ["tight"]},
            {"profile": "writer", "namespaces": ["team-a", "team-b"]},
        ]
    },
    "profiles": {
        "tight": {
            "operations": ["*"],
            "rate_limit": {"per_caller": {"write": {"requests": 1, "per_seconds": 60, "burst": 1}}},
        }
    },
}


def binaries() -> tuple[str, str]:
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if prometheus is None or promtool is None:
        pytest.fail(
            "prometheus and promtool are required for this test: install them "
            "(Debian/Ubuntu: apt-get install prometheus; .ci/run does this)"
        )
    return prometheus, promtool


def probe(expr: str) -> str:
    """An alert expression without its number-literal comparisons: the watched series."""
    return _COMPARISON.sub("", expr).strip()


def dashboard_queries() -> list[tuple[str, str]]:
    doc = json.loads(DASHBOARD.read_text())
    out = []
    for panel in doc["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"].replace("$__rate_interval", "1m")))
    return out


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


class Prometheus:
    def __init__(self, binary: str, tmp: Path, target: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = tmp / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {
                        "scrape_interval": "1s",
                        "evaluation_interval": "1s",
                        "scrape_timeout": "900ms",
                    },
                    "rule_files": [str(RULES)],
                    "scrape_configs": [
                        {"job_name": "gateway", "static_configs": [{"targets": [target]}]}
                    ],
                }
            )
        )
        self.log = tmp / "prometheus.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )

    def query(self, expr: str) -> list[dict[str, Any]]:
        got = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5)
        body = got.json()
        assert body["status"] == "success", (expr, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait(self, what: str, ready: Callable[[], bool], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited:\n{self.log.read_text()[-3000:]}")
            try:
                if ready():
                    return
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"prometheus: {what} after {timeout}s\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


@pytest.fixture
def prometheus_stack(tmp_path: Path, redis_url: str) -> Iterator[tuple[Stack, Prometheus, str]]:
    prometheus_bin, _ = binaries()
    (tmp_path / "stack").mkdir()
    (tmp_path / "prom").mkdir()
    with running_stack(tmp_path / "stack", redis_url=redis_url, overrides=TIGHT) as stack:
        assert stack.gateway.metrics_app is not None
        with ThreadedUvicorn(stack.gateway.metrics_app, lifespan="off") as metrics:
            target = f"127.0.0.1:{metrics.port}"
            prom = Prometheus(prometheus_bin, tmp_path / "prom", target)
            try:
                yield stack, prom, metrics.url
            finally:
                prom.stop()


def mixed_traffic(gw: Stack) -> None:
    q = {"api-version": V2}
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        thread = c.post("/openai/threads", params=q, json={}, headers=gw.auth()).json()
        tid = thread["id"]
        ok = [
            c.get(f"/openai/threads/{tid}", params=q, headers=gw.auth()),
            c.post(
                f"/openai/threads/{tid}/messages",
                params=q,
                headers=gw.auth(),
                json={"role": "user", "content": "hello", "metadata": {"k": "v"}},
            ),
            c.get(f"/openai/threads/{tid}/messages", params=q, headers=gw.auth()),
        ]
        assert [r.status_code for r in ok] == [200, 200, 200]
        # A streamed answer (the v1 API's streamed response): its time to first event.
        with c.stream(
            "POST",
            "/openai/v1/responses",
            headers=gw.auth(),
            json={"model": "gpt-4o", "input": "hello", "stream": True},
        ) as streamed_response:
            assert streamed_response.status_code == 200
            assert b"response.completed" in streamed_response.read()
        refused = {
            401: c.get(f"/openai/threads/{tid}", params=q),
            403: c.post("/openai/threads", params=q, json={}, headers=gw.auth(namespace="readers")),
            400: c.post(
                f"/openai/threads/{tid}/messages",
                params=q,
                headers=gw.auth(),
                json={"role": "system", "content": "x"},
            ),
            404: c.get("/openai/batches", params=q, headers=gw.auth()),
        }
        assert {s: r.status_code for s, r in refused.items()} == {s: s for s in refused}
        limited = [
            c.post(
                "/openai/threads", params=q, json={}, headers=gw.auth(namespace="tight")
            ).status_code
            for _ in range(3)
        ]
        assert limited[0] == 200 and 429 in limited
        gw.fake.script(ScriptedResponse(status=500, chunks=(b'{"error":{}}',)))
        gw.fake.script(ScriptedResponse(status=502, chunks=(b'{"error":{}}',)))
        errors = [
            c.get(f"/openai/threads/{tid}", params=q, headers=gw.auth()).status_code
            for _ in range(2)
        ]
        assert errors == [500, 502]
        gw.fake.script(
            ScriptedResponse(
                chunks=(b"data: {}\n\n",) * 4,
                cut_after=2,
                headers=(("content-type", "text/event-stream"),),
            )
        )
        with (
            pytest.raises(httpx.HTTPError),
            c.stream(
                "GET", f"/openai/threads/{tid}/messages", params=q, headers=gw.auth()
            ) as streamed,
        ):
            streamed.read()


def test_dashboard_and_alerts_against_real_prometheus(
    prometheus_stack: tuple[Stack, Prometheus, str],
) -> None:
    gw, prom, metrics_url = prometheus_stack
    _, promtool = binaries()
    assert gw.gateway.metrics is not None
    registry = gw.gateway.metrics.registry
    prom.wait("ready", lambda: httpx.get(f"{prom.url}/-/ready", timeout=1).status_code == 200)
    prom.wait(
        "first scrape", lambda: any(r["value"][1] == "1" for r in prom.query('up{job="gateway"}'))
    )

    mixed_traffic(gw)
    total = sum(
        s.value
        for f in registry.collect()
        if f.name == "gateway_requests"
        for s in f.samples
        if s.name == "gateway_requests_total"
    )

    def scraped_all() -> bool:
        got = prom.query("sum(gateway_requests_total)")
        return bool(got) and float(got[0]["value"][1]) == total

    prom.wait("the burst scraped", scraped_all)
    time.sleep(2.2)  # two more scrapes and rule evaluations after the burst

    empty = [(title, expr) for title, expr in dashboard_queries() if not prom.query(expr)]
    assert empty == [], "dashboard queries without data"
    assert len(dashboard_queries()) >= 25

    rules = alert_rules()
    names = {r["alert"] for r in rules}
    assert {
        "GatewayHigh5xxRate",
        "GatewayUpstreamErrors",
        "GatewayOverheadAboveTarget",
        "GatewayRedisDegraded",
        "GatewayJwksRefreshFailing",
        "Gateway429Storm",
        "GatewayStreamsSlowToStart",
    } <= names
    for rule in rules:
        prom.query(rule["expr"])  # valid as written (it may be empty: not firing)
    no_series = [
        (r["alert"], probe(r["expr"]))
        for r in rules
        if ENTRA_SERIES not in r["expr"] and not prom.query(probe(r["expr"]))
    ]
    assert no_series == [], "alert expressions whose underlying series are missing"
    loaded = httpx.get(f"{prom.url}/api/v1/rules", timeout=5).json()["data"]["groups"]
    health = {r["name"]: (r["health"], r.get("lastError", "")) for g in loaded for r in g["rules"]}
    assert set(health) == names
    assert all(h == "ok" for h, _ in health.values()), health

    check_rules = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=30
    )
    assert check_rules.returncode == 0, check_rules.stdout + check_rules.stderr
    scrape = httpx.get(f"{metrics_url}/metrics", timeout=5).text
    check_metrics = subprocess.run(
        [promtool, "check", "metrics"], input=scrape, capture_output=True, text=True, timeout=30
    )
    assert (
        check_metrics.returncode == 0
        and not check_metrics.stdout.strip()
        and not check_metrics.stderr.strip()
    ), check_metrics.stdout + check_metrics.stderr


def has_data(prom: Prometheus, expr: str) -> bool:
    return bool(prom.query(expr))


def active_alerts(prom: Prometheus) -> dict[str, tuple[str, dict[str, str]]]:
    got = httpx.get(f"{prom.url}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    return {a["labels"]["alertname"]: (a["state"], a["labels"]) for a in got}


def test_token_alerts_fire_on_a_real_prometheus(tmp_path: Path) -> None:
    """The Entra token's series exist from the start, and when the token endpoint goes down
    both alerts become active (``pending``: their expression holds; ``for`` then makes them
    fire) on a real Prometheus evaluating the repository's rule file."""
    prometheus_bin, _ = binaries()
    (tmp_path / "stack").mkdir()
    (tmp_path / "prom").mkdir()
    entra_rules = [r for r in alert_rules() if ENTRA_SERIES in r["expr"]]
    assert {r["alert"] for r in entra_rules} == {
        "GatewayUpstreamTokenRefreshFailing",
        "GatewayUpstreamTokenExpired",
    }
    # 20 s tokens, refreshed at half life: the endpoint fails from just after the first token,
    # so Prometheus only ever sees the one good fetch.
    with running_entra_stack(tmp_path / "stack", lifetime_s=20) as s:
        s.endpoint.fail_status = 503
        obtained = s.endpoint.good_calls()[0].at
        assert s.stack.gateway.metrics_app is not None
        with ThreadedUvicorn(s.stack.gateway.metrics_app, lifespan="off") as metrics:
            prom = Prometheus(prometheus_bin, tmp_path / "prom", f"127.0.0.1:{metrics.port}")
            try:
                prom.wait(
                    "first scrape",
                    lambda: any(r["value"][1] == "1" for r in prom.query('up{job="gateway"}')),
                )
                for rule in entra_rules:  # (increase() needs a second scrape)
                    expr = probe(rule["expr"])
                    prom.wait(rule["alert"], functools.partial(has_data, prom, expr))
                left = prom.query('gateway_upstream_token_expiry_seconds{backend="default"}')
                assert 0 < float(left[0]["value"][1]) <= 20
                assert not set(active_alerts(prom)) & {r["alert"] for r in entra_rules}

                def both_active() -> bool:
                    alerts = active_alerts(prom)
                    return all(
                        alerts.get(r["alert"], ("", {}))[0] in ("pending", "firing")
                        and alerts[r["alert"]][1].get("backend") == "default"
                        for r in entra_rules
                    )

                prom.wait("both token alerts active", both_active, timeout=45)
                # The expiry alert only once expired (azure-identity counts a token's life from
                # the request time truncated to whole seconds: up to 1 s before the endpoint's).
                assert time.time() >= obtained + 19
                assert len(s.endpoint.good_calls()) == 1
            finally:
                prom.stop()


def test_alert_probes_strip_only_number_comparisons() -> None:
    assert (
        probe("sum(rate(a[5m])) / sum(rate(b[5m])) > 0.05") == "sum(rate(a[5m])) / sum(rate(b[5m]))"
    )
    assert (
        probe('sum by (i) (increase(x{r="error"}[15m])) > 0\n and sum by (i) (y) == 0')
        == 'sum by (i) (increase(x{r="error"}[15m]))\n and sum by (i) (y)'
    )
    assert (
        probe('histogram_quantile(0.99, sum by (le) (rate(h_bucket{le="0.5"}[5m]))) > 1e-3')
        == 'histogram_quantile(0.99, sum by (le) (rate(h_bucket{le="0.5"}[5m])))'
    )
    for rule in alert_rules():
        assert "vector(" not in rule["expr"], rule["alert"]

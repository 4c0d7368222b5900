"""Proof against a real Prometheus: the dashboard and the alert rules query series that exist.

A private ``prometheus`` process (loopback, its own free port, a temporary storage dir,
1 s scrape and evaluation interval, the repository's rule file loaded) scrapes a running
gateway's metrics listener while a short burst of mixed traffic goes through the gateway:
successes, a refusal of each kind (401, 403, 400 policy, 404 route, 429 rate limit) and
upstream errors (scripted 500 and 502 from Azure, a stream cut mid-way).

Then, through the HTTP API (``/api/v1/query``):

* the dashboard's template variables (namespace, job, pod: Grafana's ``label_values``, asked
  through ``/api/v1/label/<name>/values``) must offer the target's labels, which the test's
  scrape config sets as Prometheus Operator does for a ServiceMonitor (job
  ``assistants-gateway``, ``namespace``, ``pod``);
* every target of every panel in ``deploy/kustomize/base/grafana-dashboard.json`` (Grafana's
  ``$__rate_interval`` read as ``1m``, the variables set to those labels) must return a
  non-empty result, and an empty one when ``$pod`` names another pod: no query escapes the
  variables (a bare ``sum`` would still answer);
* every alert expression must be valid, and its *underlying series* must be non-empty. The
  rule file keeps one convention so that this can be checked while the alerts (rightly) do
  not fire: every comparison is against a number literal. Removing each ``<op> <number>``
  leaves the series the alert watches (``A / B > 0.05`` → ``A / B``; ``A > 0 and B == 0`` →
  ``A and B``); no ``or vector(0)`` is used or added. Counters with fixed label sets start at 0
  so those series exist before the first failure. Each of those series carries ``namespace``
  and ``job`` (every ``by`` keeps them);
* the absence rules (``absent()``, ``unless``: target down or gone) return nothing while the
  gateway is scraped; ``test_availability_alerts_fire_when_the_pods_go`` makes them fire by
  stopping the target, then removing it from the scrape config;
* the Prometheus Adapter rule of the in-flight HPA variant, rendered as the adapter does,
  returns the pod's in-flight requests; the saturation maxima equal the config;
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
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.observability.metrics import make_registry, metrics_app
from tests.entrastack import running_entra_stack
from tests.fakeazure import ScriptedResponse
from tests.servers import ThreadedUvicorn, free_port
from tests.stack import V2, Stack, running_stack

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "kustomize" / "base" / "grafana-dashboard.json"
RULES = ROOT / "deploy" / "prometheus-rules.yaml"
#: Series only an Entra credential exports: their rules and panels are proven on an Entra
#: stack (``test_token_alerts_fire_on_a_real_prometheus``), not on the API-key stack.
ENTRA_SERIES = "gateway_upstream_token_"
RUNBOOKS = ROOT / "deploy" / "README.md"
ADAPTER = ROOT / "deploy" / "kustomize" / "components" / "hpa-in-flight" / "prometheus-adapter.yaml"
#: The labels Prometheus Operator puts on a ServiceMonitor's targets (job: the Service's name).
JOB = "assistants-gateway"
TARGET_LABELS = {"namespace": "ai-platform", "pod": "assistants-gateway-7d9f-abcde"}
VARIABLES = {"namespace": TARGET_LABELS["namespace"], "job": JOB, "pod": TARGET_LABELS["pod"]}
SCOPED = ('namespace=~"$namespace"', 'job=~"$job"', 'pod=~"$pod"')
_SELECTOR = re.compile(r"\b((?:gateway|process)_[a-z_]+|up)\b(\{[^}]*\})?")
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


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def raw_queries() -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in dashboard()["panels"]
        for target in panel.get("targets", [])
    ]


def dashboard_queries(variables: dict[str, str] = VARIABLES) -> list[tuple[str, str]]:
    """Every panel query as Grafana sends it with these variable values."""
    out = []
    for title, expr in raw_queries():
        expr = expr.replace("$__rate_interval", "1m")
        for name, value in variables.items():
            expr = expr.replace(f"${name}", value)
        out.append((title, expr))
    return out


def unscoped_selectors(expr: str) -> list[str]:
    """The series selectors of a query that lack one of the namespace/job/pod matchers."""
    return [
        m.group(0)
        for m in _SELECTOR.finditer(expr)
        if not all(s in (m.group(2) or "") for s in SCOPED)
    ]


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def is_absence(rule: dict[str, Any]) -> bool:
    """Rules that fire on missing series: no underlying series exists while they are silent."""
    return "absent(" in rule["expr"] or " unless " in " ".join(rule["expr"].split())


def adapter_query(rule: dict[str, Any], namespace: str, pod: str) -> str:
    """The Prometheus Adapter's ``metricsQuery`` as it renders it for one pod of a namespace."""
    series = re.match(r"\s*([a-z_:]+)", rule["seriesQuery"])
    assert series is not None
    template: str = rule["metricsQuery"]
    return (
        template.replace("<<.Series>>", series.group(1))
        .replace("<<.LabelMatchers>>", f'namespace="{namespace}",pod=~"{pod}"')
        .replace("<<.GroupBy>>", "pod")
    )


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub makes for a file's headings (lowercase, punctuation dropped)."""
    anchors = set()
    for line in markdown.splitlines():
        if m := re.match(r"#{1,6}\s+(.*?)\s*$", line):
            slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors


class Prometheus:
    def __init__(self, binary: str, tmp: Path, target: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = tmp / "prometheus.yml"
        self.configure([target])
        config = self.config
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

    def configure(self, targets: list[str]) -> None:
        """Write the scrape config: the gateway's job with the ServiceMonitor's labels."""
        static = [{"targets": targets, "labels": TARGET_LABELS}] if targets else []
        # Another exporter in the gateway's namespace (Prometheus itself): its `up` must never
        # count as a gateway replica, and its job is never offered by the Job variable.
        neighbour = {
            "targets": [f"127.0.0.1:{self.port}"],
            "labels": {"namespace": TARGET_LABELS["namespace"], "pod": "prometheus-0"},
        }
        self.config.write_text(
            yaml.safe_dump(
                {
                    "global": {
                        "scrape_interval": "1s",
                        "evaluation_interval": "1s",
                        "scrape_timeout": "900ms",
                    },
                    "rule_files": [str(RULES)],
                    "scrape_configs": [
                        {"job_name": JOB, "static_configs": static},
                        {"job_name": "neighbour", "static_configs": [neighbour]},
                    ],
                }
            )
        )

    def reload(self, targets: list[str]) -> None:
        self.configure(targets)
        self.proc.send_signal(signal.SIGHUP)

    def label_values(self, label: str, match: str) -> list[str]:
        """Grafana's ``label_values(match, label)`` variable query."""
        got = httpx.get(
            f"{self.url}/api/v1/label/{label}/values", params={"match[]": match}, timeout=5
        ).json()
        assert got["status"] == "success", got
        values: list[str] = got["data"]
        return values

    def alerts(self) -> dict[str, str]:
        got = httpx.get(f"{self.url}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
        return {a["labels"]["alertname"]: a["state"] for a in got}

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
        "first scrape", lambda: any(r["value"][1] == "1" for r in prom.query(f'up{{job="{JOB}"}}'))
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

    # The template variables offer the target's labels, each narrowed by the ones before it.
    variables = {v["name"]: v for v in dashboard()["templating"]["list"] if v["type"] == "query"}
    assert list(variables) == ["namespace", "job", "pod"]
    everything: dict[str, str] = {}  # each variable at "All", as Grafana sends it
    for name, variable in variables.items():
        m = re.fullmatch(r"label_values\((.*), (\w+)\)", variable["query"]["query"])
        assert m is not None and m.group(2) == name, variable["query"]
        match = m.group(1)
        for other, value in VARIABLES.items():
            match = match.replace(f"${other}", value)
        assert prom.label_values(name, match) == [VARIABLES[name]], (name, match)
        assert variable["includeAll"] and variable["multi"]
        # Without a custom all value Grafana sends the offered values as a regex alternation.
        offered = prom.label_values(name, re.sub(r"\$\w+", ".*", m.group(1)))
        everything[name] = variable["allValue"] or "(" + "|".join(offered) + ")"

    empty = [
        (title, expr)
        for title, expr in dashboard_queries()
        if ENTRA_SERIES not in expr and not prom.query(expr)
    ]
    assert empty == [], "dashboard queries without data"
    assert len(dashboard_queries()) >= 25
    # "All" everywhere: every panel answers, and `up` counts gateway targets only (the Job
    # variable offers jobs exposing gateway_build_info, and "All" means those).
    empty = [
        (title, expr)
        for title, expr in dashboard_queries(everything)
        if ENTRA_SERIES not in expr and not prom.query(expr)
    ]
    assert empty == [], "dashboard queries without data for All"
    (replicas,) = [e for t, e in dashboard_queries(everything) if t == "Replicas up"]
    (up,) = prom.query(replicas)
    assert up["value"][1] == "1"  # the gateway's one target, not the neighbour exporter
    # ... and every query honours the variables: another pod's dashboard shows nothing.
    elsewhere = {**VARIABLES, "pod": "another-pod"}
    leaking = [(title, expr) for title, expr in dashboard_queries(elsewhere) if prom.query(expr)]
    assert leaking == [], "dashboard queries that ignore $pod"

    # Saturation: the maxima are the configured caps.
    config = gw.gateway.config
    maxima = {
        "gateway_upstream_pool_max_connections": config.upstream.max_connections,
        "gateway_max_requests_in_flight": config.server.max_concurrent_connections,
    }
    for metric, expected in maxima.items():
        (sample,) = prom.query(f'{metric}{{job="{JOB}"}}')
        assert float(sample["value"][1]) == expected, metric

    # The HPA variant's Prometheus Adapter rule, rendered for this pod, answers per pod.
    (adapter_rule,) = yaml.safe_load(ADAPTER.read_text())["rules"]["custom"]
    assert prom.query(adapter_rule["seriesQuery"])
    (per_pod,) = prom.query(adapter_query(adapter_rule, **TARGET_LABELS))
    assert per_pod["metric"] == {"pod": TARGET_LABELS["pod"]}

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
    assert {"GatewayTargetsDown", "GatewayTargetsGone", "GatewayAbsent"} <= names
    for rule in rules:
        prom.query(rule["expr"])  # valid as written (it may be empty: not firing)
    watched = [r for r in rules if not is_absence(r) and ENTRA_SERIES not in r["expr"]]
    no_series = [
        (r["alert"], probe(r["expr"])) for r in watched if not prom.query(probe(r["expr"]))
    ]
    assert no_series == [], "alert expressions whose underlying series are missing"
    ungrouped = [
        (r["alert"], series["metric"])
        for r in watched
        for series in prom.query(probe(r["expr"]))
        if not {"namespace", "job"} <= series["metric"].keys()
    ]
    assert ungrouped == [], "alerts whose series lose the namespace or job label"
    firing = [r["alert"] for r in rules if is_absence(r) and prom.query(r["expr"])]
    assert firing == [], "absence alerts fire while the gateway is scraped"
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
    """The Entra token's series exist from the start (the dashboard's token panels answer,
    scoped by the variables), and when the token endpoint goes down both alerts become active
    (``pending``: their expression holds; ``for`` then makes them fire), carrying namespace,
    job and backend, on a real Prometheus evaluating the repository's rule file."""
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
                    lambda: any(r["value"][1] == "1" for r in prom.query(f'up{{job="{JOB}"}}')),
                )
                for rule in entra_rules:  # (increase() needs a second scrape)
                    expr = probe(rule["expr"])
                    prom.wait(rule["alert"], functools.partial(has_data, prom, expr))
                left = prom.query('gateway_upstream_token_expiry_seconds{backend="default"}')
                assert 0 < float(left[0]["value"][1]) <= 20
                assert not set(active_alerts(prom)) & {r["alert"] for r in entra_rules}
                token_panels = [(t, e) for t, e in dashboard_queries() if ENTRA_SERIES in e]
                assert len(token_panels) == 3
                assert [(t, e) for t, e in token_panels if not prom.query(e)] == []
                elsewhere = {**VARIABLES, "pod": "another-pod"}
                leaking = [e for _, e in dashboard_queries(elsewhere) if ENTRA_SERIES in e]
                assert [e for e in leaking if prom.query(e)] == []

                def both_active() -> bool:
                    alerts = active_alerts(prom)
                    return all(
                        alerts.get(r["alert"], ("", {}))[0] in ("pending", "firing")
                        and {
                            k: alerts[r["alert"]][1].get(k) for k in ("backend", "namespace", "job")
                        }
                        == {
                            "backend": "default",
                            "namespace": TARGET_LABELS["namespace"],
                            "job": JOB,
                        }
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


def test_every_alert_links_a_runbook_that_exists() -> None:
    anchors = github_anchors(RUNBOOKS.read_text())
    missing = []
    for rule in alert_rules():
        url = rule["annotations"].get("runbook_url", "")
        page, _, anchor = url.partition("#")
        if page != "deploy/README.md" or anchor not in anchors:
            missing.append((rule["alert"], url))
    assert missing == [], "runbook_url must name a heading of deploy/README.md"
    assert {r["alert"].lower() for r in alert_rules()} <= anchors


def test_every_dashboard_query_is_scoped_by_the_variables() -> None:
    """No bare ``sum``: each selector names $namespace, $job and $pod (the real-Prometheus test
    shows the same by answering nothing for another pod)."""
    unscoped = [(t, unscoped_selectors(e)) for t, e in raw_queries() if unscoped_selectors(e)]
    assert unscoped == []
    assert unscoped_selectors("sum(rate(gateway_requests_total[1m]))")  # the check bites
    top = sorted(
        (p for p in dashboard()["panels"] if p["gridPos"]["y"] < 5 and p["type"] == "stat"),
        key=lambda p: p["gridPos"]["x"],
    )
    assert [p["title"] for p in top][:4] == [
        "Requests per second",
        "Error ratio (5xx)",
        "p99 duration (unstreamed)",
        "Limiter degraded (replicas)",
    ]
    titles = {p["title"] for p in dashboard()["panels"]}
    assert {
        "CPU per pod (cores; limit 1)",
        "Resident memory per pod",
        "Upstream pool in use / its maximum",
        "In flight / the connection cap",
        "Replicas",
    } <= titles


def test_availability_alerts_fire_when_the_pods_go(tmp_path: Path) -> None:
    """The target-down and absence rules, made to fire on a real Prometheus: a gateway metrics
    listener is scraped, then stopped (every scrape fails: GatewayTargetsDown), then removed
    from the scrape config (no target left: GatewayTargetsGone and GatewayAbsent)."""
    prometheus_bin, _ = binaries()
    rules = {r["alert"]: r for r in alert_rules()}
    listener = ThreadedUvicorn(metrics_app(make_registry()), lifespan="off").start()
    prom = Prometheus(prometheus_bin, tmp_path, f"127.0.0.1:{listener.port}")
    try:
        prom.wait("ready", lambda: httpx.get(f"{prom.url}/-/ready", timeout=1).status_code == 200)
        prom.wait("scraped", lambda: bool(prom.query(f'up{{job="{JOB}"}} == 1')))
        time.sleep(1.5)  # rule evaluations with the target up
        for name in ("GatewayTargetsDown", "GatewayTargetsGone", "GatewayAbsent"):
            assert prom.query(rules[name]["expr"]) == [], name

        listener.stop()
        prom.wait("target down", lambda: bool(prom.query(rules["GatewayTargetsDown"]["expr"])))
        (down,) = prom.query(rules["GatewayTargetsDown"]["expr"])
        assert down["metric"] == {"namespace": TARGET_LABELS["namespace"], "job": JOB}
        prom.wait("down pending", lambda: prom.alerts().get("GatewayTargetsDown") == "pending")
        assert prom.query(rules["GatewayAbsent"]["expr"]) == []

        prom.reload([])  # the Deployment deleted: the endpoints, and so the targets, are gone
        prom.wait("target gone", lambda: not prom.query(f'up{{job="{JOB}"}}'))
        (gone,) = prom.query(rules["GatewayTargetsGone"]["expr"])
        assert gone["metric"] == {"namespace": TARGET_LABELS["namespace"], "job": JOB}
        (absent,) = prom.query(rules["GatewayAbsent"]["expr"])
        assert absent["metric"] == {"job": JOB}
        prom.wait(
            "gone pending",
            lambda: {"GatewayTargetsGone", "GatewayAbsent"} <= prom.alerts().keys(),
        )
        assert prom.query(rules["GatewayTargetsDown"]["expr"]) == []
    finally:
        prom.stop()
        listener.stop()

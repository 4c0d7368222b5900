"""The deployment artefacts under deploy/: rendered, schema-validated, and held to the code.

- Rendering uses a real kustomize: ``kustomize build`` or ``kubectl kustomize`` (kubectl ships
  kustomize v5), or the command in ``GATEWAY_KUSTOMIZE``. None of them installs from PyPI or
  Debian in a usable version, so a missing one fails with that message.
- Core kinds are validated strictly (unknown fields refused) against the Kubernetes 1.37 JSON
  schemas bundled in PyPI's ``kubernetes-validate``. ServiceMonitor and PrometheusRule are CRDs
  that those schemas lack: they are checked structurally here instead.
- Drift: every port, path, env var, mounted file and flag the manifests use must be what the
  gateway's config and CLI actually use; the shutdown budget inequality; the securityContext;
  the PrometheusRule equals its source (``deploy/sync-monitoring.py --check``); the dashboard
  is one file; the version label, the package version and the image tag agree.
- The HPA variant (``components/hpa-in-flight``) is rendered on top of the production overlay
  and validated like the rest; no kustomize patch edits a list by index; the image is
  installed from a hash-locked requirements file and pinned by digest.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
import pytest
import yaml
from kubernetes_validate import utils as kv
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from gateway.config import Config, parse
from tests.servers import run_app
from tests.stack import Stack

pytestmark = pytest.mark.timeout(30)
ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUSTOMIZE = DEPLOY / "kustomize"
OVERLAYS = {
    "base": KUSTOMIZE / "base",
    "production": KUSTOMIZE / "overlays" / "production",
    "workload-identity": KUSTOMIZE / "overlays" / "workload-identity",
}
K8S_VERSION = "1.37.0"
CRD_GROUPS = ("monitoring.coreos.com/",)
Doc = dict[str, Any]


def _renderer() -> list[str]:
    if cmd := os.environ.get("GATEWAY_KUSTOMIZE"):
        return shlex.split(cmd)
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    pytest.fail(
        "no kustomize: install kustomize (v5) or kubectl (it embeds kustomize), or set "
        "GATEWAY_KUSTOMIZE to a command that renders a kustomization directory"
    )


def render_dir(path: Path) -> tuple[Doc, ...]:
    result = subprocess.run(
        [*_renderer(), str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"kustomize failed for {path}:\n{result.stderr}"
    return tuple(d for d in yaml.safe_load_all(result.stdout) if d)


@cache
def render(name: str) -> tuple[Doc, ...]:
    return render_dir(OVERLAYS[name])


def schema_errors(docs: tuple[Doc, ...]) -> list[str]:
    errors = []
    for doc in docs:
        if doc["apiVersion"].startswith(CRD_GROUPS):
            continue
        try:
            kv.validate(doc, K8S_VERSION, strict=True)
        except kv.ValidationError as exc:
            errors.append(
                f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at "
                f"{'/'.join(map(str, exc.path))}"
            )
    return errors


def network_policies(docs: tuple[Doc, ...]) -> list[Doc]:
    """The NetworkPolicies that select the gateway's pods (their allowances add up)."""
    selector = one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    found = [
        d
        for d in docs
        if d["kind"] == "NetworkPolicy"
        and d["spec"]["podSelector"]["matchLabels"].items() <= selector.items()
    ]
    assert found, "no NetworkPolicy selects the gateway's pods"
    return found


def one(docs: tuple[Doc, ...], kind: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def gateway_config_map(docs: tuple[Doc, ...]) -> Doc:
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and "gateway.toml" in d.get("data", {})]
    return cm


def rendered_config(docs: tuple[Doc, ...]) -> Config:
    return parse(tomllib.loads(gateway_config_map(docs)["data"]["gateway.toml"]))


def pod_spec(docs: tuple[Doc, ...]) -> Doc:
    spec: Doc = one(docs, "Deployment")["spec"]["template"]["spec"]
    return spec


def container(docs: tuple[Doc, ...]) -> Doc:
    containers: list[Doc] = pod_spec(docs)["containers"]
    (c,) = containers
    return c


def env_value(c: Doc, name: str) -> Any:
    (entry,) = [e for e in c["env"] if e["name"] == name]
    return entry.get("value", entry.get("valueFrom"))


def mount_for(docs: tuple[Doc, ...], path: str) -> tuple[Doc, Doc]:
    """The (volumeMount, volume) a container file path lies in."""
    mounts = [
        m
        for m in container(docs)["volumeMounts"]
        if PurePosixPath(path).is_relative_to(m["mountPath"])
    ]
    assert len(mounts) == 1, f"{path}: no single volume mount holds it"
    (volume,) = [v for v in pod_spec(docs)["volumes"] if v["name"] == mounts[0]["name"]]
    return mounts[0], volume


def relative(path: str, mount: Doc) -> str:
    return str(PurePosixPath(path).relative_to(mount["mountPath"]))


@pytest.fixture(params=sorted(OVERLAYS))
def docs(request: pytest.FixtureRequest) -> tuple[Doc, ...]:
    return render(request.param)


# --- rendering and schemas -----------------------------------------------------------------


def test_rendered_core_kinds_pass_the_kubernetes_schemas(docs: tuple[Doc, ...]) -> None:
    kinds = {d["kind"] for d in docs}
    assert {
        "ServiceAccount",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ConfigMap",
        "ServiceMonitor",
        "PrometheusRule",
    } <= kinds
    assert schema_errors(docs) == []


def test_the_validator_refuses_unknown_fields() -> None:
    """Guards the guard: strict validation really rejects a misspelt field."""
    deployment = one(render("base"), "Deployment")
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 3}}
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, K8S_VERSION, strict=True)


def test_crds_are_structurally_sound(docs: tuple[Doc, ...]) -> None:
    monitor, rule, service = (
        one(docs, "ServiceMonitor"),
        one(docs, "PrometheusRule"),
        one(docs, "Service"),
    )
    for doc in (monitor, rule):
        assert doc["apiVersion"] == "monitoring.coreos.com/v1"
        assert set(doc) <= {"apiVersion", "kind", "metadata", "spec"}
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in service_ports
        assert endpoint["path"].startswith("/")
        assert re.fullmatch(r"\d+[smh]", endpoint["interval"])
    groups = rule["spec"]["groups"]
    assert groups and len({g["name"] for g in groups}) == len(groups)
    for group in groups:
        for r in group["rules"]:
            assert ("alert" in r) != ("record" in r), r
            assert isinstance(r["expr"], str) and r["expr"].strip()
            assert set(r) <= {
                "alert",
                "record",
                "expr",
                "for",
                "keep_firing_for",
                "labels",
                "annotations",
            }


def test_no_secret_is_rendered(docs: tuple[Doc, ...]) -> None:
    """Secrets are created out of band; the manifests only refer to them."""
    assert not [d for d in docs if d["kind"] == "Secret"]


# --- the config ----------------------------------------------------------------------------


def _config_files() -> list[Path]:
    return sorted(DEPLOY.rglob("*.toml"))


@pytest.mark.parametrize("path", _config_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_check_config_accepts_every_config_under_deploy(path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check-config", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_config_accepts_the_rendered_config_map(
    docs: tuple[Doc, ...], tmp_path: Path
) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(gateway_config_map(docs)["data"]["gateway.toml"])
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check-config", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_config_map_name_carries_a_content_hash(docs: tuple[Doc, ...]) -> None:
    """Checksum-driven rollout: the Deployment mounts the hashed, generated name."""
    name = gateway_config_map(docs)["metadata"]["name"]
    assert re.fullmatch(r"assistants-gateway-config-[a-z0-9]{10}", name)
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    assert volumes["config"]["configMap"]["name"] == name


# --- drift: manifests vs. the gateway ------------------------------------------------------


def test_container_and_service_ports_equal_the_config(docs: tuple[Doc, ...]) -> None:
    config = rendered_config(docs)
    ports = {p["name"]: p["containerPort"] for p in container(docs)["ports"]}
    assert ports == {"http": config.server.port, "metrics": config.server.metrics_port}
    service = one(docs, "Service")
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in ports
        assert port["port"] == ports[port["targetPort"]]
    ingress_ports = {
        p["port"]
        for policy in network_policies(docs)
        for rule in policy["spec"].get("ingress", [])
        for p in rule["ports"]
    }
    assert ingress_ports == set(ports.values())
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container(docs)[probe]["httpGet"]["port"] in ports


def test_probe_paths_are_served_by_the_gateway(stack: Stack) -> None:
    c = container(render("base"))
    expected = {
        "livenessProbe": "/healthz",
        "startupProbe": "/healthz",
        "readinessProbe": "/readyz",
    }
    for probe, path in expected.items():
        assert c[probe]["httpGet"]["path"] == path
        answer = httpx.get(f"{stack.url}{path}", timeout=5)
        assert answer.status_code == 200, (path, answer.text)
        assert answer.headers["content-type"] == "application/json"


def test_metrics_path_is_served_by_the_metrics_listener(stack: Stack) -> None:
    (endpoint,) = one(render("base"), "ServiceMonitor")["spec"]["endpoints"]
    app = getattr(stack.gateway, "metrics_app", None)
    assert app is not None, "the gateway exposes no metrics_app"
    with run_app(app, lifespan="off") as server:
        answer = httpx.get(f"{server.url}{endpoint['path']}", timeout=5)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")


def test_env_vars_are_ones_the_gateway_reads(docs: tuple[Doc, ...]) -> None:
    files = [*(ROOT / "gateway" / "config").glob("*.py"), ROOT / "gateway" / "cli.py"]
    sources = "".join(f.read_text() for f in files)
    for entry in container(docs)["env"]:
        assert f'"{entry["name"]}"' in sources, f"{entry['name']} is read nowhere in the gateway"


def test_mounted_files_are_the_configured_files(docs: tuple[Doc, ...]) -> None:
    config = rendered_config(docs)
    c = container(docs)

    # The Azure key: the env var and the config name the same file, in a Secret volume
    # mounted as a whole directory (subPath mounts never see a rotation). With Entra workload
    # identity there is no key (test_workload_identity_overlay_has_no_key).
    if config.upstream.credential == "api_key":
        key_file = env_value(c, "AZURE_OPENAI_API_KEY_FILE")
        assert key_file == config.upstream.api_key_file
        mount, volume = mount_for(docs, key_file)
        assert "subPath" not in mount and mount.get("readOnly") is True
        assert relative(key_file, mount) in {i["path"] for i in volume["secret"]["items"]}

    # The gateway's own token for JWKS fetches: a projected token with the API server's
    # audience, never one of the gateway's own audiences.
    (k8s,) = [i for i in config.auth.issuers if i.keys.bearer_token_file is not None]
    token_file = k8s.keys.bearer_token_file
    assert token_file is not None
    mount, volume = mount_for(docs, token_file)
    (sat,) = [
        s["serviceAccountToken"]
        for s in volume["projected"]["sources"]
        if "serviceAccountToken" in s
    ]
    assert sat["path"] == relative(token_file, mount)
    assert sat["audience"] not in k8s.policy.audiences
    assert sat["audience"] == k8s.policy.issuer  # the API server's issuer = its audience
    assert sat["expirationSeconds"] >= 600

    # The Redis URL (with its password) is a file in a Secret volume (redis.url_file), never an
    # environment variable or a literal.
    assert not [e for e in c["env"] if e["name"] == "REDIS_URL"]
    url_file = config.redis.url_file
    assert url_file is not None
    mount, volume = mount_for(docs, url_file)
    assert "subPath" not in mount and mount.get("readOnly") is True
    assert volume["secret"]["secretName"] == "assistants-gateway-redis"
    assert {"key": "url", "path": relative(url_file, mount)} in volume["secret"]["items"]
    assert config.redis.url.startswith("rediss://")  # TLS even for the file's placeholder

    # The config file the args name is the ConfigMap's key in its mount.
    config_path = c["args"][c["args"].index("--config") + 1]
    mount, volume = mount_for(docs, config_path)
    assert relative(config_path, mount) == "gateway.toml" and "configMap" in volume


def test_workload_identity_overlay_has_no_key_and_asks_for_the_webhook() -> None:
    docs = render("workload-identity")
    config = rendered_config(docs)
    assert config.upstream.credential == "entra"
    assert config.upstream.api_key_file is None
    # Client, tenant, authority and token file: the webhook's variables (none set here).
    entra = config.upstream.entra
    assert (entra.client_id, entra.tenant_id, entra.authority_host, entra.token_file) == (
        None,
        None,
        None,
        None,
    )
    assert entra.scope == "https://cognitiveservices.azure.com/.default"
    account = one(docs, "ServiceAccount")
    client_id = account["metadata"]["annotations"]["azure.workload.identity/client-id"]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", client_id)
    template = one(docs, "Deployment")["spec"]["template"]
    assert template["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert template["spec"]["serviceAccountName"] == account["metadata"]["name"]
    c = container(docs)
    names = {e["name"] for e in c["env"]}
    assert not names & {"AZURE_OPENAI_API_KEY_FILE", "AZURE_OPENAI_API_KEY"}
    assert "REDIS_URL" not in names  # the Redis URL is the mounted Secret (redis.url_file)
    secrets = {v["secret"]["secretName"] for v in template["spec"]["volumes"] if "secret" in v}
    assert "assistants-gateway-azure" not in secrets
    assert "assistants-gateway-redis" in secrets
    assert not [m for m in c["volumeMounts"] if "azure-openai" in m["mountPath"]]
    # Everything else is production's (the overlay builds on it).
    production = render("production")
    assert (
        one(docs, "Deployment")["spec"]["template"]["spec"]["securityContext"]
        == one(production, "Deployment")["spec"]["template"]["spec"]["securityContext"]
    )
    assert {d["kind"] for d in docs} == {d["kind"] for d in production}


def test_args_are_accepted_by_gateway_serve(docs: tuple[Doc, ...]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    flags = set(re.findall(r"--[a-z][a-z-]*", result.stdout))
    used = {a for a in container(docs)["args"] if a.startswith("-")}
    assert used <= flags, used - flags
    assert "command" not in container(docs)  # the image's ENTRYPOINT (gateway serve) runs


def test_termination_grace_covers_prestop_and_drain(docs: tuple[Doc, ...]) -> None:
    config = rendered_config(docs)
    command = container(docs)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = int(command[1])
    assert 5 <= pre_stop <= 15
    grace = pod_spec(docs)["terminationGracePeriodSeconds"]
    assert grace > pre_stop + config.server.drain_timeout_s + 5


def test_security_context_is_locked_down(docs: tuple[Doc, ...]) -> None:
    pod, c = pod_spec(docs), container(docs)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    # The only writable path is /tmp, an emptyDir.
    writable = [m for m in c["volumeMounts"] if not m.get("readOnly")]
    assert [m["mountPath"] for m in writable] == ["/tmp"]
    (tmp,) = [v for v in pod["volumes"] if v["name"] == writable[0]["name"]]
    assert "emptyDir" in tmp
    resources = c["resources"]
    assert {"cpu", "memory"} <= resources["requests"].keys()
    assert "memory" in resources["limits"]


def test_scaling_and_disruption_objects_target_the_deployment(docs: tuple[Doc, ...]) -> None:
    deployment = one(docs, "Deployment")
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    selector = deployment["spec"]["selector"]["matchLabels"]
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert hpa["spec"]["minReplicas"] >= 2
    assert one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector
    assert one(docs, "Service")["spec"]["selector"] == selector
    for policy in network_policies(docs):
        assert policy["spec"]["podSelector"]["matchLabels"] == selector
    keys = {t["topologyKey"] for t in pod_spec(docs)["topologySpreadConstraints"]}
    assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}


def test_network_policy_allows_only_what_the_gateway_needs(docs: tuple[Doc, ...]) -> None:
    config = rendered_config(docs)
    policies = {p["metadata"]["name"]: p["spec"] for p in network_policies(docs)}
    assert set(policies) == {
        "assistants-gateway",
        "assistants-gateway-apiserver",
        "assistants-gateway-redis",
    }
    spec = policies["assistants-gateway"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]  # default deny both ways
    for name in ("assistants-gateway-apiserver", "assistants-gateway-redis"):
        assert policies[name]["policyTypes"] == ["Egress"] and "ingress" not in policies[name]
        assert len(policies[name]["egress"]) == 1
    by_port = {rule["ports"][0]["port"]: rule["from"] for rule in spec["ingress"]}
    assert by_port[config.server.port] == [
        {"namespaceSelector": {"matchLabels": {"assistants-gateway.ai-platform/caller": "true"}}}
    ]
    assert by_port[config.server.metrics_port] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    egress = [rule for policy in policies.values() for rule in policy["egress"]]
    egress_ports = sorted(sorted(p["port"] for p in rule["ports"]) for rule in egress)
    assert egress_ports == [[53, 53], [443], [443, 6443], [6379, 6380]]
    assert all(rule.get("to") for rule in egress)  # no rule open to everything
    (apiserver,) = policies["assistants-gateway-apiserver"]["egress"]
    (redis,) = policies["assistants-gateway-redis"]["egress"]
    assert [t["ipBlock"]["cidr"] for t in apiserver["to"]] and all(
        "except" not in t["ipBlock"] for t in apiserver["to"] + redis["to"]
    )


def _patches(kustomization: Path) -> Iterator[tuple[Path, Any]]:
    doc = yaml.safe_load(kustomization.read_text())
    for patch in doc.get("patches", []):
        if "patch" in patch:
            yield kustomization, yaml.safe_load(patch["patch"])
        else:
            for part in yaml.safe_load_all((kustomization.parent / patch["path"]).read_text()):
                yield kustomization, part


def test_no_patch_edits_a_list_by_index() -> None:
    """A JSON patch path like /spec/egress/2/... silently edits whatever rule is third today."""
    found = []
    for kustomization in KUSTOMIZE.rglob("kustomization.yaml"):
        for where, patch in _patches(kustomization):
            ops = patch if isinstance(patch, list) else []
            found += [(str(where), op["path"]) for op in ops if re.search(r"/\d+(/|$)", op["path"])]
    assert found == []
    assert re.search(r"/\d+(/|$)", "/spec/egress/1/to/0/ipBlock/cidr")  # the check bites


def test_the_overlay_sets_site_addresses_by_policy_name(tmp_path: Path) -> None:
    """Changing an address in the overlay's site file changes that policy, and only it."""
    overlay = tmp_path / "site"
    overlay.mkdir()
    site = (OVERLAYS["production"] / "site-egress.yaml").read_text()
    assert site.count("cidr: 198.51.100.0/28") == 1
    (overlay / "site-egress.yaml").write_text(site.replace("198.51.100.0/28", "203.0.113.16/28"))
    base = os.path.relpath(OVERLAYS["base"], overlay)
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": [base], "patches": [{"path": "site-egress.yaml"}]})
    )
    policies = {p["metadata"]["name"]: p for p in network_policies(render_dir(overlay))}
    (redis,) = policies["assistants-gateway-redis"]["spec"]["egress"]
    assert redis["to"] == [{"ipBlock": {"cidr": "203.0.113.16/28"}}]
    assert (
        policies["assistants-gateway"]
        == {p["metadata"]["name"]: p for p in network_policies(render("base"))}[
            "assistants-gateway"
        ]
    )


# --- monitoring copies ---------------------------------------------------------------------


def test_prometheus_rule_groups_equal_the_rules_file() -> None:
    expected = yaml.safe_load((DEPLOY / "prometheus-rules.yaml").read_text())["groups"]
    assert one(render("base"), "PrometheusRule")["spec"]["groups"] == expected
    check = subprocess.run(
        [sys.executable, str(DEPLOY / "sync-monitoring.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert check.returncode == 0, check.stderr


def test_the_dashboard_is_one_file_and_its_config_map() -> None:
    source = KUSTOMIZE / "base" / "grafana-dashboard.json"
    copies = [
        p
        for p in ROOT.rglob("*dashboard*.json")
        if ".venv" not in p.parts and "node_modules" not in p.parts
    ]
    assert copies == [source], "one dashboard file: deploy/kustomize/base/grafana-dashboard.json"
    (cm,) = [
        d
        for d in render("base")
        if d["kind"] == "ConfigMap" and "grafana-dashboard.json" in d.get("data", {})
    ]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["data"]["grafana-dashboard.json"] == source.read_text()


# --- labels, the HPA variant ---------------------------------------------------------------


def _version() -> str:
    version: str = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    return version


def test_every_object_carries_instance_and_version_labels(docs: tuple[Doc, ...]) -> None:
    version = _version()
    for doc in docs:
        if doc["kind"] == "Namespace":
            continue
        labels = doc["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/instance") == "assistants-gateway", doc["kind"]
        assert labels.get("app.kubernetes.io/version") == version, doc["kind"]
    deployment = one(docs, "Deployment")
    template = deployment["spec"]["template"]["metadata"]["labels"]
    assert template["app.kubernetes.io/version"] == version
    # Never in a selector: selectors are immutable, and a version there orphans old pods.
    selectors = [
        deployment["spec"]["selector"]["matchLabels"],
        one(docs, "Service")["spec"]["selector"],
        one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        one(docs, "ServiceMonitor")["spec"]["selector"]["matchLabels"],
        *(p["spec"]["podSelector"]["matchLabels"] for p in network_policies(docs)),
    ]
    for selector in selectors:
        assert not {"app.kubernetes.io/version", "app.kubernetes.io/instance"} & selector.keys()


def test_the_production_image_is_pinned_by_digest() -> None:
    image = container(render("production"))["image"]
    m = re.fullmatch(r"([a-z0-9.-]+(?::\d+)?/[a-z0-9/._-]+):([\w.-]+)@sha256:([0-9a-f]{64})", image)
    assert m is not None, image
    assert m.group(2) == _version()  # the tag people read is the version label


def render_in_flight_variant(tmp_path: Path) -> tuple[Doc, ...]:
    """The production overlay with the in-flight HPA component, as an operator would add it."""
    overlay = tmp_path / "in-flight"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [os.path.relpath(OVERLAYS["production"], overlay)],
                "components": [
                    os.path.relpath(KUSTOMIZE / "components" / "hpa-in-flight", overlay)
                ],
            }
        )
    )
    return render_dir(overlay)


def test_hpa_variant_scales_on_in_flight_requests_per_pod(tmp_path: Path) -> None:
    docs = render_in_flight_variant(tmp_path)
    assert schema_errors(docs) == []
    hpa = one(docs, "HorizontalPodAutoscaler")
    production = one(render("production"), "HorizontalPodAutoscaler")
    # Only the metrics change: the overlay's replica bounds and the behaviour stay.
    assert {k: v for k, v in hpa["spec"].items() if k != "metrics"} == {
        k: v for k, v in production["spec"].items() if k != "metrics"
    }
    by_type = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert set(by_type) == {"Resource", "Pods"}
    assert by_type["Resource"] == production["spec"]["metrics"][0]  # CPU stays
    pods = by_type["Pods"]["pods"]
    assert pods["metric"] == {"name": "gateway_requests_in_flight"}  # a metric the gateway has
    assert pods["target"]["type"] == "AverageValue"
    target = float(pods["target"]["averageValue"])
    config = rendered_config(docs)
    caps = (config.upstream.max_connections, config.server.max_concurrent_connections)
    assert 0 < target < min(caps)  # scale out before a pod queues on its pool or refuses
    # The adapter's rule serves that metric name (its query is run in test_prometheus.py).
    values = yaml.safe_load(
        (KUSTOMIZE / "components" / "hpa-in-flight" / "prometheus-adapter.yaml").read_text()
    )
    (rule,) = values["rules"]["custom"]
    assert rule["name"]["as"] == pods["metric"]["name"]
    assert rule["resources"]["overrides"] == {
        "namespace": {"resource": "namespace"},
        "pod": {"resource": "pod"},
    }
    # Without the component, CPU alone (no dependency on Prometheus Adapter).
    assert one(render("base"), "HorizontalPodAutoscaler")["spec"]["metrics"] == [
        by_type["Resource"]
    ]


# --- the image -----------------------------------------------------------------------------


def _instructions(text: str) -> Iterator[tuple[str, str]]:
    logical = re.sub(r"\\\n", " ", text)
    for line in logical.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            yield word.upper(), rest.strip()


def _final_stage() -> list[tuple[str, str]]:
    stages: list[list[tuple[str, str]]] = []
    for word, rest in _instructions((DEPLOY / "Dockerfile").read_text()):
        if word == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((word, rest))
    assert len(stages) >= 2, "the Dockerfile must be multi-stage"
    return stages[-1]


def test_dockerfile_final_stage_is_small_non_root_and_runs_gateway_serve() -> None:
    import json

    final = _final_stage()
    words = dict(final)  # the last of each instruction counts
    docs = render("base")
    c, pod = container(docs), pod_spec(docs)
    # Non-root, numeric (runAsNonRoot can only verify a number), and the pod's user.
    user = words["USER"].split(":")[0]
    assert user.isdigit() and int(user) > 0
    assert int(user) == pod["securityContext"]["runAsUser"]
    # Exec-form ENTRYPOINT gateway serve (so SIGTERM reaches the server, not a shell); its
    # CMD equals the Deployment's args.
    assert json.loads(words["ENTRYPOINT"]) == ["gateway", "serve"]
    assert json.loads(words["CMD"]) == c["args"]
    # No build tools, no installs from source, in the final stage.
    final_text = " ".join(rest for _, rest in final).lower()
    for tool in (
        "gcc",
        "g++",
        "clang",
        "build-essential",
        "make ",
        "python3-dev",
        "-dev ",
        "pip install",
        "apt-get install",
    ):
        assert tool not in final_text, f"final stage mentions {tool!r}"
    assert any(w == "COPY" and r.startswith("--from=") for w, r in final)
    # The final base keeps /bin/sleep for the preStop exec hook (distroless has none).
    base = words["FROM"].split()[0]
    assert "distroless" not in base and "scratch" not in base
    assert c["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    # The exposed ports are the container ports; the optional HEALTHCHECK uses /healthz.
    exposed = {int(p) for p in words["EXPOSE"].split()}
    assert exposed == {p["containerPort"] for p in c["ports"]}
    if "HEALTHCHECK" in words:
        assert "/healthz" in words["HEALTHCHECK"]
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.1[1-9][.\w-]*-slim", text, re.M)


def test_gateway_console_script_exists() -> None:
    """The image's ENTRYPOINT `gateway` is the package's console script."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["gateway"] == "gateway.cli:main"


LOCK = DEPLOY / "requirements.lock"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def _locked() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, sha256 hashes) of every requirement in the lock."""
    out: dict[str, tuple[str, list[str]]] = {}
    name = ""
    for line in LOCK.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if m := _PIN.match(stripped):
            name = canonicalize_name(m.group(1))
            assert name not in out, f"{name} pinned twice"
            out[name] = (m.group(2), [])
        elif stripped.startswith("--hash="):
            algorithm, _, digest = stripped.removeprefix("--hash=").rstrip(" \\").partition(":")
            assert algorithm == "sha256" and re.fullmatch(r"[0-9a-f]{64}", digest), stripped
            out[name][1].append(digest)
        else:
            pytest.fail(f"requirements.lock: not a pin or a hash: {stripped!r}")
    return out


def test_the_lock_pins_every_dependency_with_hashes() -> None:
    locked = _locked()
    assert all(hashes for _, hashes in locked.values()), "a pin without --hash lines"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = [
        *map(Requirement, project["project"]["dependencies"]),
        *map(Requirement, project["build-system"]["requires"]),  # --no-build-isolation
    ]
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is missing from deploy/requirements.lock"
        version = locked[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (name, version)
        for extra in requirement.extras:  # uvicorn[standard], pyjwt[crypto]: their packages too
            for line in importlib.metadata.requires(requirement.name) or []:
                inner = Requirement(line)
                if inner.marker is not None and inner.marker.evaluate({"extra": extra}):
                    assert canonicalize_name(inner.name) in locked, (name, extra, inner.name)
    # Regenerated by the command in its header (and in deploy/README.md), never by hand.
    header = LOCK.read_text().splitlines()[:3]
    command = next(line.strip("# ").strip() for line in header if "--generate-hashes" in line)
    assert command.startswith("uv pip compile pyproject.toml deploy/requirements-build.in ")
    assert command in (DEPLOY / "README.md").read_text()


def test_the_image_installs_only_hashed_files() -> None:
    stages: list[list[tuple[str, str]]] = []
    for word, rest in _instructions((DEPLOY / "Dockerfile").read_text()):
        if word == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((word, rest))
    build = stages[0]
    installs = [rest for word, rest in build if word == "RUN" and "pip install" in rest]
    locked, project = installs
    assert "--require-hashes" in locked and "--no-deps" in locked
    assert "-r requirements.lock" in locked
    # The gateway itself: nothing resolved, no isolated build env fetched from an index.
    assert "--no-deps" in project and "--no-build-isolation" in project
    copies = [rest for word, rest in build if word == "COPY"]
    assert copies[0] == "deploy/requirements.lock ./"  # before the source: a cached layer
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert "!deploy/requirements.lock" in ignore

#!/usr/bin/env python3
"""Copy the monitoring sources into the kustomize base (kustomize reads no file outside it).

    python3 deploy/sync-monitoring.py

- deploy/prometheus-rules.yaml (plain rule-file format, the source) → the `spec.groups` of
  deploy/kustomize/base/prometheusrule.yaml (a monitoring.coreos.com/v1 PrometheusRule);
- deploy/grafana-dashboard.json (the source) → deploy/kustomize/base/grafana-dashboard.json.

tests/test_deploy.py fails when either copy differs from its source. Needs PyYAML.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parent
BASE = DEPLOY / "kustomize" / "base"
HEADER = """\
# GENERATED from deploy/prometheus-rules.yaml by deploy/sync-monitoring.py: edit the source,
# then re-run the script (tests/test_deploy.py checks that the groups are equal).
"""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def prometheus_rule(groups: list[Any]) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "assistants-gateway",
                     "labels": {"app.kubernetes.io/name": "assistants-gateway"}},
        "spec": {"groups": groups},
    }


def main() -> int:
    rules = yaml.safe_load((DEPLOY / "prometheus-rules.yaml").read_text())
    dumper = type("LiteralDumper", (yaml.SafeDumper,), {})
    dumper.add_representer(str, _str)
    text = yaml.dump(prometheus_rule(rules["groups"]), Dumper=dumper, sort_keys=False,
                     width=100, allow_unicode=True)
    (BASE / "prometheusrule.yaml").write_text(HEADER + text)
    dashboard = DEPLOY / "grafana-dashboard.json"
    if dashboard.exists():
        shutil.copyfile(dashboard, BASE / "grafana-dashboard.json")
    else:
        print(f"note: {dashboard} does not exist yet; dashboard copy skipped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env bash
# Validates what deploy/ holds, as CI does (make lint):
#  - every Kubernetes overlay, rendered by `kubectl kustomize`, against the Kubernetes schemas
#    of the oldest version we support (strict: unknown fields are errors);
#  - the compose file against the Compose specification's schema;
#  - the Prometheus configuration and alert rules (`promtool check config`) and the rules' unit
#    tests (`promtool test rules`);
#  - the Grafana dashboard: JSON, and every query of it parsed as PromQL by promtool.
# Needs kubectl, promtool and the Python tools of deploy/requirements.txt (in $PY_VENV).
set -euo pipefail
cd "$(dirname "$0")"
venv=${PY_VENV:-../target/py-venv}
kubernetes_version=${KUBERNETES_VERSION:-1.32.0}
out=../target/deploy
mkdir -p "$out"

for overlay in kubernetes/overlays/*/; do
    name=$(basename "$overlay")
    kubectl kustomize "$overlay" > "$out/kubernetes-$name.yaml"
    "$venv/bin/kubernetes-validate" --strict --quiet -k "$kubernetes_version" "$out/kubernetes-$name.yaml"
    echo "kubernetes overlay $name: valid against $kubernetes_version"
done

"$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec compose.yaml

(cd prometheus && promtool check config prometheus.yaml && promtool test rules alerts.test.yaml)

# Each dashboard query becomes a recording rule, so that promtool parses it.
"$venv/bin/python" - grafana/dashboards/*.json > "$out/dashboard-queries.yaml" <<'PY'
import json
import sys

print("groups:\n  - name: dashboard-queries\n    rules:")
for path in sys.argv[1:]:
    with open(path) as file:
        dashboard = json.load(file)
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "5m")
            name = f"dashboard:panel{panel['id']}_{target['refId']}"
            print(f"      - record: {name}\n        expr: {json.dumps(expr)}")
PY
promtool check rules "$out/dashboard-queries.yaml"

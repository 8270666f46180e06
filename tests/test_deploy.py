"""deploy/: every kustomize target renders, validates, and keeps the properties that matter.

- ``kubectl kustomize`` (kubectl >= 1.21: its kustomize must know components)
  renders the base and each overlay;
- each built-in object passes ``kubernetes-validate`` against the pinned
  Kubernetes schema in strict mode (an unknown or misspelt field fails);
- KEDA's ScaledObject and TriggerAuthentication pass the OpenAPI schema of
  KEDA's own CRDs, stored in deploy/schemas/ (unknown fields fail there too,
  as the API server's strict field validation would);
- then: hardened containers with limits, placeholder-only Secrets, a grace
  period above the per-file time limit, the queue KEDA watches is the one the
  workers consume, and no stateful service in prod.
"""

from __future__ import annotations

import base64
import copy
import re
import shutil
import subprocess
from fnmatch import fnmatchcase
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from servers import skip_or_fail

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
TARGETS = ("base", "overlays/dev", "overlays/prod")
K8S_VERSION = "1.32.0"  # the Kubernetes schema validated against (kubectl here is 1.32)
PLACEHOLDER = "CHANGE_ME"
ENGINE_PEAK_MB = 570  # engine's peak RSS on a 1M-event file; the worker limit needs headroom
STATEFUL_IMAGES = re.compile(r"(^|/)(postgres|rabbitmq|minio|mc)[:@]")
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")

Doc = dict[str, Any]


@cache
def _kubectl() -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        skip_or_fail("kubectl not found (Debian: kubernetes-client; any kubectl >= 1.21)")
    out = subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True,
                         timeout=60).stdout
    found = re.search(r"Kustomize Version: v(\d+)", out)
    if found is None or int(found.group(1)) < 4:
        skip_or_fail(f"kubectl's kustomize is too old for components/labels: {out.strip()!r}")
    return kubectl


@cache
def render(target: str) -> list[Doc]:
    proc = subprocess.run([_kubectl(), "kustomize", str(DEPLOY / target)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"kubectl kustomize deploy/{target}:\n{proc.stderr}"
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def _kv() -> Any:
    try:
        import kubernetes_validate
    except ImportError:
        skip_or_fail("kubernetes-validate not installed (pip install -e '.[test]')")
    return kubernetes_validate


def _of(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def _named(docs: list[Doc], kind: str, name: str) -> Doc:
    (found,) = [d for d in _of(docs, kind) if d["metadata"]["name"] == name]
    return found


def _pod_spec(doc: Doc) -> dict[str, Any] | None:
    spec = doc.get("spec", {})
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    template = spec.get("template")
    return template["spec"] if template else None


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


@cache
def _crd_schema(name: str) -> dict[str, Any]:
    crd = [d for d in yaml.safe_load_all((DEPLOY / "schemas" / name).read_text()) if d][0]
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    return _closed(copy.deepcopy(version["schema"]["openAPIV3Schema"]))


def _closed(schema: Any) -> Any:
    """Unknown fields fail, as with the API server's strict field validation."""
    if isinstance(schema, dict):
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        for value in schema.values():
            _closed(value)
    elif isinstance(schema, list):
        for value in schema:
            _closed(value)
    return schema


def _keda_errors(doc: Doc) -> list[str]:
    import jsonschema

    schema = _crd_schema({"ScaledObject": "keda-scaledobjects.yaml",
                          "TriggerAuthentication": "keda-triggerauthentications.yaml"}[doc["kind"]])
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(doc)]


def _k8s_errors(doc: Doc) -> list[str]:
    kv = _kv()
    try:
        kv.validate(doc, K8S_VERSION, strict=True)
    except kv.ValidationError as err:
        return [f"{'.'.join(map(str, err.path))}: {err.message}"]
    return []


@pytest.mark.parametrize("target", TARGETS)
def test_renders_and_validates(target: str) -> None:
    docs = render(target)
    assert docs, f"deploy/{target} rendered nothing"
    errors = []
    for doc in docs:
        check = _keda_errors if doc["apiVersion"].startswith("keda.sh/") else _k8s_errors
        errors += [f"{doc['kind']}/{doc['metadata']['name']}: {e}" for e in check(doc)]
    assert not errors, "\n".join(errors)
    assert len(_of(docs, "ScaledObject")) == 1 and len(_of(docs, "TriggerAuthentication")) == 1


def test_validators_are_not_no_ops() -> None:
    """A misspelt field fails both validators: the passes above mean something."""
    docs = render("base")
    deployment = copy.deepcopy(_named(docs, "Deployment", "delivery-worker"))
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 660
    assert _k8s_errors(deployment)
    scaled = copy.deepcopy(_of(docs, "ScaledObject")[0])
    scaled["spec"]["minReplicas"] = 0
    assert _keda_errors(scaled)
    scaled = copy.deepcopy(_of(docs, "ScaledObject")[0])
    scaled["spec"]["minReplicaCount"] = "zero"
    assert _keda_errors(scaled)


@pytest.mark.parametrize("target", TARGETS)
def test_pods_hardened_with_limits(target: str) -> None:
    workloads = [d for d in render(target) if d["kind"] in WORKLOADS]
    assert workloads
    for doc in workloads:
        where = f"deploy/{target} {doc['kind']}/{doc['metadata']['name']}"
        pod = _pod_spec(doc)
        assert pod is not None, where
        assert pod.get("automountServiceAccountToken") is False, where
        pod_ctx = pod.get("securityContext", {})
        assert pod_ctx.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        for c in _containers(pod):
            ctx = c.get("securityContext", {})
            at = f"{where} container {c['name']}"
            assert ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is True, at
            assert (ctx.get("runAsUser") or pod_ctx.get("runAsUser") or 0) > 0, at
            assert ctx.get("readOnlyRootFilesystem") is True, at
            assert ctx.get("allowPrivilegeEscalation") is False, at
            assert ctx.get("capabilities", {}).get("drop") == ["ALL"], at
            limits = c.get("resources", {}).get("limits", {})
            requests = c.get("resources", {}).get("requests", {})
            assert {"cpu", "memory"} <= limits.keys() and {"cpu", "memory"} <= requests.keys(), at
            assert "/tmp" in {m["mountPath"] for m in c.get("volumeMounts", [])}, at
            image = c["image"]
            assert re.search(r"[:@]", image.rsplit("/", 1)[-1]), f"{at}: unpinned {image}"
            assert not image.endswith(":latest"), at


def _mebibytes(quantity: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 1e3, "M": 1e6, "G": 1e9}
    number, unit = re.fullmatch(r"([\d.]+)([A-Za-z]*)", quantity).groups()  # type: ignore[union-attr]
    return float(number) * units.get(unit, 1) / 2**20


@pytest.mark.parametrize("target", TARGETS)
def test_workers_sized_and_drained_safely(target: str) -> None:
    docs = render(target)
    config = _of(docs, "ConfigMap")[0]["data"]
    worker = _named(docs, "Deployment", "delivery-worker")
    pod = worker["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > int(config["DELIVERY_FILE_TIMEOUT"])
    (container,) = pod["containers"]
    assert container["args"] == ["delivery", "worker"] and "command" not in container
    limit = _mebibytes(container["resources"]["limits"]["memory"])
    assert limit >= 1.5 * ENGINE_PEAK_MB * 1e6 / 2**20
    # A file over its own limit fails cleanly, before the OOM killer takes the pod.
    per_file = _mebibytes(config["DELIVERY_WORKER_MEMORY"])
    assert ENGINE_PEAK_MB * 1e6 / 2**20 < per_file < limit
    scaled = _of(docs, "ScaledObject")[0]
    assert scaled["spec"]["scaleTargetRef"]["name"] == "delivery-worker"
    assert "replicas" not in worker["spec"]  # KEDA owns the count
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "rabbitmq"
    assert trigger["metadata"]["queueName"] == config["DELIVERY_QUEUE"]
    auth = _of(docs, "TriggerAuthentication")[0]
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    low, high = scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]
    assert low == {"overlays/dev": 0, "overlays/prod": 1}.get(target, low) and high >= max(low, 1)
    api = _named(docs, "Deployment", "delivery-api")["spec"]["template"]["spec"]["containers"][0]
    assert api["args"][:2] == ["delivery", "serve"] and "command" not in api
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    budgets = _of(docs, "PodDisruptionBudget")
    selected = {p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] for p in budgets}
    assert {"delivery-api", "delivery-worker"} <= selected
    # maxUnavailable lets a drain proceed at any replica count (KEDA's 0, dev's single pods).
    assert all("maxUnavailable" in p["spec"] for p in budgets)


def test_settings_named_are_read_by_the_code() -> None:
    """Every DELIVERY_* the manifests set is one the code reads (a typo would be ignored)."""
    source = "\n".join(p.read_text() for pkg in ("delivery", "transformers", "api")
                       for p in (REPO / pkg).rglob("*.py"))
    known = set(re.findall(r"DELIVERY_[A-Z0-9_]+", source))
    for target in TARGETS:
        docs = render(target)
        names = set(_of(docs, "ConfigMap")[0]["data"])
        for doc in (d for d in docs if d["kind"] in WORKLOADS):
            for c in _containers(_pod_spec(doc) or {"containers": []}):
                names |= {e["name"] for e in c.get("env", [])}
        unknown = {n for n in names if n.startswith("DELIVERY_")} - known
        assert not unknown, f"deploy/{target} sets settings no code reads: {sorted(unknown)}"


@pytest.mark.parametrize("target", TARGETS)
def test_secrets_hold_placeholders_only(target: str) -> None:
    for secret in _of(render(target), "Secret"):
        values = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
        values |= secret.get("stringData", {})
        for key, value in values.items():
            assert PLACEHOLDER in value, f"{secret['metadata']['name']}/{key} is not a placeholder"


def test_prod_runs_no_stateful_services_and_no_secrets() -> None:
    docs = render("overlays/prod")
    assert not _of(docs, "Secret"), "prod Secrets are created out of band"
    assert not _of(docs, "StatefulSet") and not _of(docs, "PersistentVolumeClaim")
    for doc in (d for d in docs if d["kind"] in WORKLOADS):
        for c in _containers(_pod_spec(doc) or {"containers": []}):
            assert not STATEFUL_IMAGES.search(c["image"]), c["image"]
    dev = render("overlays/dev")
    assert {"postgres", "rabbitmq", "minio"} <= {d["metadata"]["name"]
                                                 for d in _of(dev, "StatefulSet")}


@pytest.mark.parametrize("target", TARGETS)
def test_default_deny_network_policy(target: str) -> None:
    deny = _named(render(target), "NetworkPolicy", "default-deny-all")["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny


def test_dockerfile_matches_manifests() -> None:
    text = (DEPLOY / "docker" / "Dockerfile").read_text()
    base = re.search(r"ARG PYTHON_IMAGE=(\S+)", text).group(1)  # type: ignore[union-attr]
    assert 'ENTRYPOINT ["/usr/bin/tini", "--"]' in text  # PID 1 that forwards SIGTERM
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base)
    stages = re.split(r"^FROM ", text, flags=re.M)
    by_name = {s.split()[2]: s for s in stages[1:] if " AS " in s.split("\n")[0]}
    docs = render("base")
    for target, deployment in (("api", "delivery-api"), ("worker", "delivery-worker")):
        stage = by_name[target]
        assert "HEALTHCHECK" in stage
        command = yaml.safe_load(re.search(r"^CMD (\[.*\])$", stage, re.M).group(1))  # type: ignore[union-attr]
        pod = _named(docs, "Deployment", deployment)["spec"]["template"]["spec"]
        assert pod["containers"][0]["args"] == command  # the ENTRYPOINT (tini) stays
        user = re.search(r"^USER (\d+):(\d+)$", by_name["runtime"], re.M)
        assert user and int(user.group(1)) == pod["securityContext"]["runAsUser"] > 0


def test_images_get_every_package_file() -> None:
    """The images install non-editable: a data file not in package-data is missing there."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = declared.get("package-data", {})
    missing = []
    for pkg in ("delivery", "transformers", "api"):
        for path in (REPO / pkg).rglob("*"):
            if not path.is_file() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
                continue
            top = path.relative_to(REPO).parts[0]
            inside = path.relative_to(REPO / top).as_posix()
            if not any(fnmatchcase(inside, p) for p in patterns.get(top, [])):
                missing.append(path.relative_to(REPO).as_posix())
    assert not missing, f"add to [tool.setuptools.package-data] in pyproject.toml: {missing}"

"""deploy/k8s: validated against Kubernetes' own JSON schemas (kubernetes-validate, strict), and
checked by parsing for what a schema cannot say: probes on the health endpoints, one migration Job
per service, the ConfigMap/Secret split, no secret value in the repository, names that match."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy/k8s"
DOCS = ROOT / "docs/DEPLOYMENT.md"

APPS = {"users": 8001, "catalog": 8002, "orders": 8003, "gateway": 8000}
SERVICES = ("users", "catalog", "orders")
SECRET_NAME = "shop-secrets"
SECRET_KEYS = {
    "internal-api-token",
    "users-db-password",
    "catalog-db-password",
    "orders-db-password",
    "first-superuser-password",
    "jwt-private-key.pem",
}
SECRET_WORDS = ("PASSWORD", "TOKEN", "SECRET", "PRIVATE_KEY")
NOT_SECRET_SUFFIXES = ("_FILE", "_TTL_SECONDS")


def _looks_secret(name: str) -> bool:
    name = name.upper().replace("-", "_")
    return any(w in name for w in SECRET_WORDS) and not name.endswith(NOT_SECRET_SUFFIXES)


API_VERSIONS = {
    "Namespace": "v1",
    "ConfigMap": "v1",
    "Service": "v1",
    "Deployment": "apps/v1",
    "Job": "batch/v1",
}

# The fields these manifests may use, per object type: a small schema, so that a typo such as
# `readinesProbe` (which the API server would drop silently with a warning) fails here.
FIELDS: dict[str, set[str]] = {
    "object": {"apiVersion", "kind", "metadata", "spec", "data"},
    "metadata": {"name", "labels", "annotations"},
    "deployment_spec": {"replicas", "selector", "template", "strategy"},
    "job_spec": {"backoffLimit", "template", "ttlSecondsAfterFinished", "activeDeadlineSeconds"},
    "service_spec": {"type", "selector", "ports", "externalName"},
    "template": {"metadata", "spec"},
    "pod_spec": {
        "containers",
        "volumes",
        "securityContext",
        "restartPolicy",
        "terminationGracePeriodSeconds",
    },
    "pod_security": {"runAsNonRoot", "runAsUser", "runAsGroup", "fsGroup"},
    "container": {
        "name",
        "image",
        "command",
        "args",
        "ports",
        "env",
        "envFrom",
        "readinessProbe",
        "livenessProbe",
        "startupProbe",
        "resources",
        "securityContext",
        "volumeMounts",
    },
    "container_security": {"allowPrivilegeEscalation", "readOnlyRootFilesystem", "capabilities"},
    "probe": {
        "httpGet",
        "exec",
        "tcpSocket",
        "initialDelaySeconds",
        "periodSeconds",
        "timeoutSeconds",
        "failureThreshold",
        "successThreshold",
    },
    "port": {"name", "containerPort", "protocol"},
    "service_port": {"name", "port", "targetPort", "protocol"},
    "env": {"name", "value", "valueFrom"},
    "volume_mount": {"name", "mountPath", "subPath", "readOnly"},
    "volume": {"name", "emptyDir", "configMap", "secret"},
}


def _documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return docs


DOCUMENTS = _documents()


def _by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in DOCUMENTS if doc["kind"] == kind}


def _pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def _containers() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{doc['kind']}/{doc['metadata']['name']}", container)
        for _, doc in DOCUMENTS
        if doc["kind"] in ("Deployment", "Job")
        for container in _pod_spec(doc)["containers"]
    ]


def _unknown(mapping: dict[str, Any], schema: str, where: str) -> list[str]:
    return [f"{where}.{key}" for key in mapping if key not in FIELDS[schema]]


def test_kustomization_lists_every_manifest_and_sets_the_images() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)
    assert kustomization["namespace"] == "shop"
    assert {image["name"] for image in kustomization["images"]} == {f"shop/{a}" for a in APPS}


def test_every_object_has_a_known_kind_and_api_version() -> None:
    kinds = [(name, doc["kind"], doc["apiVersion"]) for name, doc in DOCUMENTS]
    assert [k for k in kinds if API_VERSIONS.get(k[1]) != k[2]] == []
    assert {k[1] for k in kinds} == set(API_VERSIONS)


def test_manifests_use_only_known_fields() -> None:
    unknown: list[str] = []
    for _, doc in DOCUMENTS:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        unknown += _unknown(doc, "object", where)
        unknown += _unknown(doc["metadata"], "metadata", where + ".metadata")
        kind = doc["kind"]
        if kind == "Service":
            unknown += _unknown(doc["spec"], "service_spec", where + ".spec")
            for port in doc["spec"]["ports"]:
                unknown += _unknown(port, "service_port", where + ".ports[]")
        if kind not in ("Deployment", "Job"):
            continue
        unknown += _unknown(
            doc["spec"], "deployment_spec" if kind == "Deployment" else "job_spec", where + ".spec"
        )
        unknown += _unknown(doc["spec"]["template"], "template", where + ".template")
        pod = _pod_spec(doc)
        unknown += _unknown(pod, "pod_spec", where + ".pod")
        unknown += _unknown(pod.get("securityContext", {}), "pod_security", where + ".pod.sc")
        for volume in pod.get("volumes", []):
            unknown += _unknown(volume, "volume", where + ".volumes[]")
        for container in pod["containers"]:
            cwhere = f"{where}/{container['name']}"
            unknown += _unknown(container, "container", cwhere)
            unknown += _unknown(container.get("securityContext", {}), "container_security", cwhere)
            for key in ("readinessProbe", "livenessProbe", "startupProbe"):
                if key in container:
                    unknown += _unknown(container[key], "probe", f"{cwhere}.{key}")
            for port in container.get("ports", []):
                unknown += _unknown(port, "port", cwhere + ".ports[]")
            for env in container.get("env", []):
                unknown += _unknown(env, "env", cwhere + ".env[]")
            for mount in container.get("volumeMounts", []):
                unknown += _unknown(mount, "volume_mount", cwhere + ".volumeMounts[]")
    assert unknown == []


def test_deployments_exist_for_every_process_of_the_topology() -> None:
    assert set(_by_kind("Deployment")) == {*APPS, "pgbouncer", "redis"}
    assert set(_by_kind("Service")) == {*APPS, "pgbouncer", "redis", "postgres"}


@pytest.mark.parametrize(("name", "port"), sorted(APPS.items()))
def test_app_deployment_probes_health_endpoints_on_its_port(name: str, port: int) -> None:
    deployment = _by_kind("Deployment")[name]
    (container,) = _pod_spec(deployment)["containers"]
    assert container["ports"] == [{"name": "http", "containerPort": port}]
    ready = "/health/live" if name == "gateway" else "/health/ready"
    assert container["readinessProbe"]["httpGet"] == {"path": ready, "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
    assert container["image"] == f"shop/{name}"


@pytest.mark.parametrize(("name", "port"), sorted(APPS.items()))
def test_service_selects_its_deployment_on_the_designed_port(name: str, port: int) -> None:
    service = _by_kind("Service")[name]
    labels = _by_kind("Deployment")[name]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"] == [{"name": "http", "port": port, "targetPort": "http"}]


def test_deployment_selectors_match_their_pod_labels() -> None:
    bad = [
        name
        for name, d in _by_kind("Deployment").items()
        if not d["spec"]["selector"]["matchLabels"].items()
        <= d["spec"]["template"]["metadata"]["labels"].items()
    ]
    assert bad == []


def test_named_probe_ports_exist_on_the_container() -> None:
    missing = []
    for where, container in _containers():
        names = {p.get("name") for p in container.get("ports", [])}
        for key in ("readinessProbe", "livenessProbe"):
            probe = container.get(key, {})
            port = (probe.get("httpGet") or probe.get("tcpSocket") or {}).get("port")
            if isinstance(port, str) and port not in names:
                missing.append(f"{where}.{key}:{port}")
    assert missing == []


def test_every_long_running_container_has_both_probes_and_resources() -> None:
    incomplete = [
        where
        for where, container in _containers()
        if where.startswith("Deployment/")
        and not {"readinessProbe", "livenessProbe", "resources"} <= set(container)
    ]
    assert incomplete == []


@pytest.mark.parametrize("svc", SERVICES)
def test_one_migration_job_per_service_runs_alembic_directly(svc: str) -> None:
    job = _by_kind("Job")[f"migrate-{svc}"]
    pod = _pod_spec(job)
    (container,) = pod["containers"]
    assert pod["restartPolicy"] == "Never"
    assert job["spec"]["backoffLimit"] >= 1
    assert container["image"] == f"shop/{svc}"
    assert container["command"] == [
        "alembic",
        "-c",
        f"services/{svc}/alembic.ini",
        "upgrade",
        "head",
    ]
    env = {e["name"]: e for e in container["env"]}
    assert env["MIGRATIONS_DATABASE_URL"]["value"] == (
        f"postgresql+psycopg2://{svc}_svc:$({svc.upper()}_DB_PASSWORD)@postgres:5432/shop"
    )


def test_only_service_jobs_exist() -> None:
    assert set(_by_kind("Job")) == {f"migrate-{svc}" for svc in SERVICES}


@pytest.mark.parametrize("svc", SERVICES)
def test_service_talks_to_the_database_through_pgbouncer(svc: str) -> None:
    (container,) = _pod_spec(_by_kind("Deployment")[svc])["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["DATABASE_URL"]["value"] == (
        f"postgresql+psycopg2://{svc}_svc:$({svc.upper()}_DB_PASSWORD)@pgbouncer:6432/shop"
        "?sslmode=disable&gssencmode=disable"
    )


def test_every_container_runs_as_non_root_read_only_without_privileges() -> None:
    pods = {
        f"{doc['kind']}/{doc['metadata']['name']}": _pod_spec(doc)
        for _, doc in DOCUMENTS
        if doc["kind"] in ("Deployment", "Job")
    }
    assert [
        w for w, pod in pods.items() if pod["securityContext"].get("runAsNonRoot") is not True
    ] == []
    hardened = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert [w for w, c in _containers() if c["securityContext"] != hardened] == []


class TestSecretSplit:
    def test_no_secret_object_is_committed(self) -> None:
        assert _by_kind("Secret") == {}
        text = "\n".join(p.read_text() for p in K8S.glob("*.yaml"))
        assert "BEGIN PRIVATE KEY" not in text
        assert "kind: Secret" not in text

    def test_config_maps_hold_no_secret_names(self) -> None:
        bad = [
            f"{name}.{key}"
            for name, cm in _by_kind("ConfigMap").items()
            for key in cm.get("data", {})
            if _looks_secret(key)
        ]
        assert bad == []

    def test_secret_looking_env_comes_from_the_secret(self) -> None:
        bad = [
            f"{where}.{env['name']}"
            for where, container in _containers()
            for env in container.get("env", [])
            if _looks_secret(env["name"]) and "valueFrom" not in env
        ]
        assert bad == []

    def test_every_secret_reference_names_a_documented_key(self) -> None:
        refs = set()
        for _, doc in DOCUMENTS:
            if doc["kind"] not in ("Deployment", "Job"):
                continue
            pod = _pod_spec(doc)
            for container in pod["containers"]:
                for env in container.get("env", []):
                    ref = env.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        refs.add((ref["name"], ref["key"]))
            for volume in pod.get("volumes", []):
                if "secret" in volume:
                    refs |= {
                        (volume["secret"]["secretName"], i["key"])
                        for i in volume["secret"]["items"]
                    }
        assert refs == {(SECRET_NAME, key) for key in SECRET_KEYS}
        docs = DOCS.read_text()
        assert [key for key in sorted(SECRET_KEYS) if key not in docs] == []

    def test_env_from_references_existing_config_maps(self) -> None:
        config_maps = set(_by_kind("ConfigMap"))
        refs = {
            ref["configMapRef"]["name"]
            for _, container in _containers()
            for ref in container.get("envFrom", [])
        }
        assert refs <= config_maps
        assert refs == config_maps - {"pgbouncer-config"}

    def test_interpolated_variables_are_defined_earlier_in_the_same_container(self) -> None:
        bad = []
        for where, container in _containers():
            defined: set[str] = set()
            for env in container.get("env", []):
                for ref in re.findall(r"\$\(([A-Z0-9_]+)\)", env.get("value", "")):
                    if ref not in defined:
                        bad.append(f"{where}.{env['name']} uses $({ref})")
                defined.add(env["name"])
        assert bad == []


@pytest.mark.parametrize(
    ("key", "source"),
    [("pgbouncer.ini", "pgbouncer.ini"), ("docker-entrypoint.sh", "docker-entrypoint.sh")],
)
def test_pgbouncer_config_map_is_an_exact_copy_of_deploy_pgbouncer(key: str, source: str) -> None:
    config = _by_kind("ConfigMap")["pgbouncer-config"]["data"]
    expected = (ROOT / "deploy/pgbouncer" / source).read_text()
    assert config[key] == expected, (
        f"deploy/k8s/config.yaml's {key} drifted from deploy/pgbouncer/{source}: copy it over"
    )


def test_users_reads_its_signing_key_from_the_mounted_secret() -> None:
    pod = _pod_spec(_by_kind("Deployment")["users"])
    (container,) = pod["containers"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    key_path = _by_kind("ConfigMap")["users-config"]["data"]["JWT_PRIVATE_KEY_FILE"]
    mount = mounts["signing-key"]
    item = volumes["signing-key"]["secret"]["items"][0]
    assert f"{mount['mountPath']}/{item['path']}" == key_path
    assert pod["securityContext"]["fsGroup"] == 10001, (
        "the non-root user reads the key via its group"
    )


@pytest.mark.parametrize("kubernetes_version", ["1.29.0", "1.37.0"])
def test_manifests_validate_against_the_kubernetes_schemas(kubernetes_version: str) -> None:
    """The real schema check (kubeconform needs its schemas from the network; kubernetes-validate
    ships them in its wheel, locked in the dev group), strict: an unknown field is an error."""
    binary = shutil.which("kubernetes-validate")
    assert binary is not None, "kubernetes-validate missing: run `make setup`"
    command = [binary]
    files = sorted(str(p) for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    result = subprocess.run(
        [*command, "--strict", "--quiet", "-k", kubernetes_version, *files],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")

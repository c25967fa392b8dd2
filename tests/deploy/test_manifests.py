"""The deployment manifests agree with the code: every ALERTFEED_* variable they set is a
real setting, the probes hit the worker's real endpoints, and shutdown has time to finish.

The manifests are read line by line (their layout is ours); ``kubectl kustomize`` and
``docker compose config`` validate them fully where those tools exist.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

from pipeline.settings import Settings
from tests.deploy.promql import DEPLOY
from tests.support.environments import settings_from

K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "docker-compose.yml"
ENV_NAME = re.compile(r"\b(ALERTFEED_[A-Z0-9_]+)\b")


def configmap_data() -> dict[str, str]:
    text = (K8S / "configmap.yaml").read_text().split("\ndata:\n", 1)[1]
    pairs = re.findall(r"^  (ALERTFEED_\w+):\s*(.+)$", text, flags=re.M)
    return {key: value.strip().strip("'\"") for key, value in pairs}


def setting_exists(env_name: str) -> bool:
    """Whether ``ALERTFEED_A__B`` names a field of Settings (which ignores unknown names, so
    a typo would silently fall back to a default)."""
    model: Any = Settings
    for part in env_name.removeprefix("ALERTFEED_").lower().split("__"):
        fields = model.model_fields if model is not None else {}
        if part not in fields:
            return False
        annotation = fields[part].annotation
        model = annotation if isinstance(annotation, type) else None
        if model is not None and not issubclass(model, BaseModel):
            model = None
    return True


def test_every_variable_the_manifests_set_is_a_real_setting() -> None:
    names = set(configmap_data())
    for path in [*K8S.glob("*.yaml"), COMPOSE, DEPLOY / "Dockerfile"]:
        names |= set(ENV_NAME.findall(path.read_text()))
    unknown = sorted(n for n in names if not setting_exists(n))
    assert not unknown, f"not settings (typo?): {unknown}"


def test_the_configmap_builds_valid_settings() -> None:
    """As the worker's pod has them: the ConfigMap's variables and the password from the
    Secret."""
    settings = settings_from({**configmap_data(), "ALERTFEED_REDIS__PASSWORD": "from-the-secret"})
    assert settings.metrics.port == 9108
    assert settings.policy.allowed_senders
    assert settings.redis.resolved_password() == "from-the-secret"


def test_the_worker_deployment_probes_the_real_endpoints_and_allows_a_clean_shutdown() -> None:
    deployment = (K8S / "deployment.yaml").read_text()
    probes = dict(
        re.findall(r"(\w+Probe):\s*\n(?:\s+#.*\n)*\s+httpGet: \{path: (\S+),", deployment)
    )
    assert probes == {
        "startupProbe": "/healthz",
        "livenessProbe": "/healthz",
        "readinessProbe": "/ready",
    }
    grace = re.search(r"terminationGracePeriodSeconds: (\d+)", deployment)
    assert (
        grace and int(grace.group(1)) >= 30
    )  # tests/e2e/test_observability.py bounds exit at 30 s
    assert "secretKeyRef:" in deployment and "name: ALERTFEED_REDIS__PASSWORD" in deployment
    assert "containerPort: 9108" in deployment
    assert "ALERTFEED_REDIS__PASSWORD" not in (K8S / "configmap.yaml").read_text()


def test_every_resource_is_in_the_kustomization_and_a_pdb_protects_the_workers() -> None:
    listed = set(re.findall(r"^  - (\S+\.yaml)$", (K8S / "kustomization.yaml").read_text(), re.M))
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present
    pdb = (K8S / "pdb.yaml").read_text()
    assert "kind: PodDisruptionBudget" in pdb and "maxUnavailable: 1" in pdb


def test_compose_runs_the_whole_stack_with_the_repository_configs() -> None:
    compose = COMPOSE.read_text()
    services = set(re.findall(r"^  (\w+):$", compose, flags=re.M))
    assert services == {"kafka", "redis", "worker", "prometheus", "grafana"}
    assert "dockerfile: deploy/Dockerfile" in compose
    assert "./prometheus:/etc/prometheus" in compose
    assert "./grafana/provisioning:/etc/grafana/provisioning" in compose
    assert '"worker:9108"' in (DEPLOY / "prometheus" / "prometheus.yml").read_text()


def test_the_state_covers_warmed_in_the_image_reach_the_workers_cache() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    deployment = (K8S / "deployment.yaml").read_text()
    image_dir = re.search(r"ALERTFEED_MATCH__COVER_CACHE_DIR=(\S+)", dockerfile)
    assert image_dir and "alertfeed covers warm --states" in dockerfile
    worker_dir = re.search(r"name: ALERTFEED_MATCH__COVER_CACHE_DIR\s+value: (\S+)", deployment)
    assert worker_dir, "the worker's cache must be writable: the root filesystem is not"
    copy = f"cp -a {image_dir.group(1)}/. {worker_dir.group(1)}/"
    assert copy in deployment, "an init container copies the image's covers to the volume"
    assert worker_dir.group(1).startswith("/var/lib/alertfeed/")  # the data emptyDir

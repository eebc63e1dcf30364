"""deploy/kubernetes/gpu-work-pool.json, the GPU training work pool's base job template, linted:
by Prefect's own work-pool schema, rendered by prefect-kubernetes' worker into the Job it would
submit, and accepted by the real Prefect server. No Kubernetes cluster runs here."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import jsonschema
import pytest
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.objects import FlowRun
from prefect.utilities.templating import find_placeholders
from prefect_kubernetes.worker import KubernetesWorker, KubernetesWorkerJobConfiguration

TEMPLATE = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes" / "gpu-work-pool.json"


@pytest.fixture(scope="module")
def template() -> dict:
    return json.loads(TEMPLATE.read_text())


def defaults(template: dict) -> dict:
    return {
        name: spec["default"]
        for name, spec in template["variables"]["properties"].items()
        if "default" in spec
    }


def rendered_job(template: dict, **values) -> dict:
    """The Job manifest the Kubernetes worker would submit for one flow run."""
    configuration = asyncio.run(
        KubernetesWorkerJobConfiguration.from_template_and_values(template, {**defaults(template), **values})
    )
    configuration.prepare_for_flow_run(FlowRun(id=uuid.uuid4(), flow_id=uuid.uuid4(), name="gpu-test"))
    return configuration.job_manifest


def test_the_template_is_a_valid_work_pool_template(template: dict):
    jsonschema.Draft202012Validator.check_schema(template["variables"])
    jsonschema.validate(defaults(template), template["variables"])
    WorkPoolCreate(name="pneumo-gpu", type="kubernetes", base_job_template=template)  # placeholders declared
    used = {p.name for p in find_placeholders(template["job_configuration"])}
    assert used <= set(template["variables"]["properties"])
    worker_keys = set(KubernetesWorker.get_default_base_job_template()["job_configuration"])
    assert worker_keys <= set(template["job_configuration"])  # nothing the worker reads is missing


def test_the_job_requests_a_gpu_node_and_runs_this_image(template: dict):
    job = rendered_job(template, image="registry.example.org/pneumo:gpu-1", gpu_count=2)
    assert job["kind"] == "Job" and job["metadata"]["namespace"] == "pneumo"
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.example.org/pneumo:gpu-1"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    # the image's entrypoint is `pneumo`: the worker's command runs as given, not as pneumo's arguments
    assert container["command"] == ["/usr/bin/env"]
    assert container["args"][:3] == ["prefect", "flow-run", "execute"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["PNEUMO_HOME"] == "/app" and "PREFECT__FLOW_RUN_ID" in env
    assert container["envFrom"] == [{"secretRef": {"name": "pneumo-training"}}]
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "pneumo-state"
    assert container["volumeMounts"][0]["mountPath"] == "/var/lib/pneumo"  # the image's PNEUMO_STATE_DIR
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's user


def test_a_gpu_count_below_one_is_refused(template: dict):
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**defaults(template), "gpu_count": 0}, template["variables"])


@pytest.mark.integration
def test_the_prefect_server_accepts_the_pool(stack, template: dict):
    from prefect.client.orchestration import get_client

    async def create_and_read() -> dict:
        async with get_client() as client:
            name = f"pneumo-gpu-{uuid.uuid4().hex[:6]}"
            await client.create_work_pool(
                WorkPoolCreate(name=name, type="kubernetes", base_job_template=template)
            )
            try:
                return (await client.read_work_pool(name)).base_job_template
            finally:
                await client.delete_work_pool(name)

    assert asyncio.run(create_and_read()) == template

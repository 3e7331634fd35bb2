"""The deployment files: Kubernetes manifests against the Kubernetes API schema (kubernetes-validate,
strict: no unknown fields), the flow-run Job template with its defaults filled in, and the compose
file as docker-compose reads it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "deploy" / "k8s"
K8S_VERSION = "1.31.0"


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.mark.parametrize("name", ["worker.yaml", "server.yaml"])
def test_kubernetes_manifests_are_valid_resources(name: str) -> None:
    import kubernetes_validate

    docs = _documents(K8S / name)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises on any schema error
        spec = (doc.get("spec") or {}).get("template", {}).get("spec")
        if spec:  # every pod runs as the image's user, with its volumes' group
            assert spec.get("securityContext", {}).get("fsGroup"), (name, doc["metadata"]["name"])


def test_the_flow_run_job_template_is_a_valid_job_with_its_defaults() -> None:
    import kubernetes_validate

    template = json.loads((K8S / "base-job-template.json").read_text())
    defaults = {k: v.get("default") for k, v in template["variables"]["properties"].items()}
    defaults.update(command=["prefect", "flow-run", "execute"], env=[], labels={"app": "filmrestore"},
                    name="restore-title")
    defaults = {k: v for k, v in defaults.items() if v is not None}

    def fill(value: Any) -> Any:
        if isinstance(value, dict):
            filled = {k: fill(v) for k, v in value.items()}
            return {k: v for k, v in filled.items() if v is not None}
        if isinstance(value, list):
            return [fill(v) for v in value]
        match = re.fullmatch(r"\{\{ (\w+) \}\}", value) if isinstance(value, str) else None
        return defaults.get(match.group(1)) if match else value

    job = fill(template["job_configuration"]["job_manifest"])
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert "/" in container["image"]  # fully qualified: a bare name is looked up on Docker Hub


def test_kustomization_names_every_manifest_and_qualifies_the_image() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in K8S.glob("*.yaml")
                                                        if p.name != "kustomization.yaml")
    (image,) = kustomization["images"]
    assert image["name"] == "filmrestore" and "/" in image["newName"]
    images = {c["image"].split(":")[0] for f in kustomization["resources"] for d in _documents(K8S / f)
              for c in (d.get("spec") or {}).get("template", {}).get("spec", {}).get("containers", [])}
    assert images <= {"filmrestore", "docker.io/library/postgres"}  # ours are rewritten by images:


def test_the_compose_file_is_valid_and_registers_only_what_it_runs() -> None:
    compose = shutil.which("docker-compose")
    if compose is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs docker-compose for this test (.ci/run installs it)")
        pytest.skip("no docker-compose on this machine")
    run = subprocess.run([compose, "-f", str(REPO / "deploy" / "compose.yaml"), "config"], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    services = yaml.safe_load(run.stdout)["services"]
    assert services["register"]["command"] == ["sh", "deploy/register.sh"]
    assert services["worker"]["depends_on"]["register"]["condition"] == "service_completed_successfully"


def test_on_kubernetes_only_the_separation_pod_asks_for_a_gpu() -> None:
    """The k8s title deployment runs on the CPU and hands its separation to a deployment whose
    pods ask for the GPU: a GPU is held while a title separates, not through its whole run."""
    deployments = {d["name"]: d for d in yaml.safe_load((REPO / "deploy" / "prefect.yaml").read_text())["deployments"]}
    title, separation = deployments["restore-title-k8s"], deployments["separate-title-k8s-gpu"]
    assert title["work_pool"]["job_variables"]["gpu_count"] == 0
    assert title["parameters"]["separation_deployment"] == "separate-title/separate-title-k8s-gpu"
    assert separation["entrypoint"].endswith("separate_title:separate_title")
    assert separation["work_pool"]["name"] == title["work_pool"]["name"] == "filmrestore-k8s"
    assert separation["work_pool"]["job_variables"]["gpu_count"] == 1
    registered = (REPO / "deploy" / "register.sh").read_text()
    assert "--name restore-title-k8s --name separate-title-k8s-gpu" in registered

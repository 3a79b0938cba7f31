"""``baton deploy k8s``: every manifest validated offline against the Kubernetes schemas, the GKE fields of each
sharing mode, the probes, the grace period arithmetic and the refused combinations.

The validator is ``kubernetes_validate`` with its bundled schemas (no network), in strict mode (an unknown field
fails), for Kubernetes ``K8S_VERSION``. It has no schema for KubeRay's ``RayService`` CRD, so the RayService is
checked in two parts: its head and worker pod templates are validated as the ``template`` of a core ``PodTemplate``
(the same PodTemplateSpec schema a Deployment's template has), and the structure KubeRay reads is checked by hand
(``apiVersion`` ray.io/v1, ``serveConfigV2`` a YAML string naming the application, the head group, the worker
groups with their replica bounds, ``rayStartParams`` of strings)."""

from __future__ import annotations

import argparse
import subprocess
import sys

import kubernetes_validate
import pytest
import yaml

from baton.deploy.k8s import (
    ACCELERATOR_LABEL,
    MAX_CLIENTS_LABEL,
    PARTITION_LABEL,
    RAY_APP_IMPORT_PATH,
    SERVER_HARD_EXIT_MARGIN_S,
    SHARING_LABEL,
    K8sOptions,
    add_parser,
    build_manifests,
)

K8S_VERSION = "1.34.0"
IMAGE = "us-docker.pkg.dev/project/repo/baton:0.1.0"

SHARING_CASES = {
    "none": ({"gpu": "nvidia-h100-80gb"}, {ACCELERATOR_LABEL: "nvidia-h100-80gb"}),
    "time-sharing": ({"gpu": "nvidia-l4", "sharing": "time-sharing", "max_shared_clients": 4},
                     {ACCELERATOR_LABEL: "nvidia-l4", SHARING_LABEL: "time-sharing", MAX_CLIENTS_LABEL: "4"}),
    "mps": ({"gpu": "nvidia-h100-80gb", "sharing": "mps", "max_shared_clients": 3},
            {ACCELERATOR_LABEL: "nvidia-h100-80gb", SHARING_LABEL: "mps", MAX_CLIENTS_LABEL: "3"}),
    "mig": ({"gpu": "nvidia-h100-80gb", "sharing": "mig", "partition_size": "1g.10gb"},
            {ACCELERATOR_LABEL: "nvidia-h100-80gb", PARTITION_LABEL: "1g.10gb"}),
}


def validate(manifest: dict) -> None:
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)  # raises ValidationError


def validate_pod_template(template: dict) -> None:
    validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "check"}, "template": template})


def by_kind(manifests: list[dict]) -> dict[str, dict]:
    return {manifest["kind"]: manifest for manifest in manifests}


def container_of(deployment: dict) -> dict:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize("mode", list(SHARING_CASES))
def test_each_sharing_mode_writes_valid_manifests_with_its_gke_fields(mode):
    fields, selector = SHARING_CASES[mode]
    manifests = build_manifests(K8sOptions(image=IMAGE, **fields))
    assert [m["kind"] for m in manifests] == ["Deployment", "Service", "HorizontalPodAutoscaler"]
    for manifest in manifests:
        validate(manifest)
    pod = by_kind(manifests)["Deployment"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == selector
    assert pod.get("hostIPC", False) is (mode == "mps")  # only MPS clients need the node's IPC namespace
    assert container_of(by_kind(manifests)["Deployment"])["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_a_cpu_only_deployment_has_no_gpu_and_no_gke_selector():
    manifests = build_manifests(K8sOptions(image=IMAGE, gpu="none"))
    for manifest in manifests:
        validate(manifest)
    deployment = by_kind(manifests)["Deployment"]
    assert "nodeSelector" not in deployment["spec"]["template"]["spec"]
    container = container_of(deployment)
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert container["command"][container["command"].index("--device") + 1] == "cpu"


def test_the_container_runs_baton_serve_with_the_flags_given():
    options = K8sOptions(image=IMAGE, model="sd15,sdxl", port=9000, drain_timeout_s=45, preset="fast",
                         dtype="bfloat16", api_key_secret="baton-keys")
    deployment, service, _ = build_manifests(options)
    container = container_of(deployment)
    assert container["command"] == ["baton", "serve", "--host", "0.0.0.0", "--port", "9000", "--model", "sd15,sdxl",
                                    "--device", "cuda", "--drain-timeout", "45", "--preset", "fast", "--dtype",
                                    "bfloat16"]
    assert container["ports"] == [{"name": "http", "containerPort": 9000, "protocol": "TCP"}]
    assert {"name": "BATON_API_KEYS", "valueFrom": {"secretKeyRef": {"name": "baton-keys", "key": "keys"}}} in \
        container["env"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_probes_use_readyz_for_startup_and_readiness_and_healthz_for_liveness():
    container = container_of(build_manifests(K8sOptions(image=IMAGE, startup_timeout_s=905))[0])
    assert container["startupProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 905  # loading gets the whole timeout


@pytest.mark.parametrize(("prestop", "drain", "grace"), [(5.0, 30.0, 45), (3.0, 12.5, 26), (0.0, 120.0, 130)])
def test_the_grace_period_covers_prestop_drain_and_the_servers_hard_exit(prestop, drain, grace):
    deployment = build_manifests(K8sOptions(image=IMAGE, prestop_s=prestop, drain_timeout_s=drain))[0]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == grace
    assert container_of(deployment)["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", f"{prestop:g}"]
    assert grace >= prestop + drain + SERVER_HARD_EXIT_MARGIN_S


def test_the_hard_exit_margin_is_the_servers():
    from baton.server.run import HARD_EXIT_AFTER_DRAIN_S

    assert SERVER_HARD_EXIT_MARGIN_S == HARD_EXIT_AFTER_DRAIN_S


def test_the_autoscaler_scales_the_deployment_on_pending_requests_per_pod():
    hpa = by_kind(build_manifests(K8sOptions(image=IMAGE, replicas=2, max_replicas=6, target_pending=2.5)))[
        "HorizontalPodAutoscaler"]
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "baton"}
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 6)
    assert spec["metrics"] == [{"type": "Pods", "pods": {"metric": {"name": "baton_pending_requests"},
                                                         "target": {"type": "AverageValue", "averageValue": "2.5"}}}]


def test_no_autoscaler_when_the_size_is_fixed():
    assert [m["kind"] for m in build_manifests(K8sOptions(image=IMAGE, replicas=3, max_replicas=3))] == [
        "Deployment", "Service"]


@pytest.mark.parametrize(
    ("flags", "flag"),
    [
        ("--sharing none --partition-size 1g.10gb", "--partition-size"),
        ("--sharing time-sharing --partition-size 1g.10gb --max-shared-clients 2", "--partition-size"),
        ("--sharing none --max-shared-clients 4", "--max-shared-clients"),
        ("--sharing mig --partition-size 1g.10gb --max-shared-clients 4", "--max-shared-clients"),
        ("--sharing mps", "--max-shared-clients"),
        ("--sharing time-sharing --max-shared-clients 1", "--max-shared-clients"),
        ("--sharing mps --max-shared-clients 49", "--max-shared-clients"),
        ("--sharing mig", "--partition-size"),
        ("--sharing mig --partition-size 1g.5gb", "--partition-size"),  # an A100 40GB size, not an H100's
        ("--gpu nvidia-l4 --sharing mig --partition-size 1g.10gb", "--gpu"),  # the L4 has no MIG
        ("--gpu nvidia-h100", "--gpu"),  # a typo: every pod would stay Pending
        ("--gpu none --sharing time-sharing --max-shared-clients 2", "--sharing"),
        ("--replicas 3 --max-replicas 2", "--max-replicas"),
        ("--drain-timeout 0", "--drain-timeout"),
        ("--memory 16GB", "--memory"),
        ("--name Baton_1", "--name"),
        ("--backend ray --sharing mps --max-shared-clients 2", "--sharing"),
        ("--backend ray --preset fast", "--preset"),
        ("--backend ray --api-key-secret keys", "--api-key-secret"),
        ("--backend ray --service-type LoadBalancer", "--service-type"),
    ],
)
def test_nonsense_is_refused_naming_the_flag_and_the_value(flags, flag, tmp_path):
    args = _parse(f"deploy k8s --image {IMAGE} --gpu nvidia-h100-80gb {flags} --out {tmp_path / 'out'}")
    with pytest.raises(ValueError, match=f"`{flag}`") as error:
        args.handler(args)
    value = flags.split(flag, 1)[1].split()[0] if f"{flag} " in flags else None
    if value is not None:
        assert value in str(error.value)
    assert not (tmp_path / "out").exists()  # nothing written


def test_the_options_name_the_field():
    with pytest.raises(ValueError, match=r"`partition_size` \('1g.10gb'\) is only for `sharing` mig"):
        K8sOptions(image=IMAGE, gpu="nvidia-h100-80gb", partition_size="1g.10gb")


@pytest.mark.parametrize(("fields", "num_gpus", "selector", "workers"), [
    ({"gpu": "nvidia-h100-80gb"}, 1.0, {ACCELERATOR_LABEL: "nvidia-h100-80gb"}, (2, 5)),
    # Ray packs the 4 replicas onto one worker's whole GPU: no GKE time-sharing labels on the workers
    ({"gpu": "nvidia-l4", "sharing": "time-sharing", "max_shared_clients": 4}, 0.25, {ACCELERATOR_LABEL: "nvidia-l4"},
     (1, 2)),
    ({"gpu": "nvidia-h100-80gb", "sharing": "mig", "partition_size": "3g.40gb"}, 1.0,
     {ACCELERATOR_LABEL: "nvidia-h100-80gb", PARTITION_LABEL: "3g.40gb"}, (2, 5)),
    ({"gpu": "none"}, 0.0, None, (2, 5)),
])
def test_the_rayservice_has_the_structure_kuberay_needs_and_valid_pod_templates(fields, num_gpus, selector, workers):
    (ray_service,) = build_manifests(K8sOptions(image=IMAGE, backend="ray", model="sd15,sdxl", replicas=2,
                                                max_replicas=5, target_pending=3, ray_version="2.60.0", **fields))
    assert (ray_service["apiVersion"], ray_service["kind"]) == ("ray.io/v1", "RayService")
    assert ray_service["metadata"]["name"] == "baton"
    # the Serve config is a YAML document in a string, as KubeRay takes it
    serve_config = yaml.safe_load(ray_service["spec"]["serveConfigV2"])
    (app,) = serve_config["applications"]
    assert app["import_path"] == RAY_APP_IMPORT_PATH
    assert app["args"] == {"models": "sd15,sdxl", "num_gpus": num_gpus, "min_replicas": 2, "max_replicas": 5,
                           "target_ongoing_requests": 3.0}
    cluster = ray_service["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == "2.60.0" and cluster["enableInTreeAutoscaling"] is True
    head = cluster["headGroupSpec"]
    (worker,) = cluster["workerGroupSpecs"]
    for group in (head, worker):
        validate_pod_template(group["template"])
        assert all(isinstance(value, str) for value in group["rayStartParams"].values())
        assert group["template"]["spec"]["containers"][0]["image"] == IMAGE  # KubeRay runs Ray in container 0
    assert head["rayStartParams"]["num-gpus"] == "0"  # replicas go to the workers
    assert "nvidia.com/gpu" not in head["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert worker["groupName"] and (worker["minReplicas"], worker["maxReplicas"]) == workers
    assert worker["minReplicas"] <= worker["replicas"] <= worker["maxReplicas"]
    limits = worker["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits.get("nvidia.com/gpu") == (None if fields["gpu"] == "none" else 1)
    assert worker["template"]["spec"].get("nodeSelector") == selector


def test_the_cli_writes_the_files_and_prints_the_apply_command(tmp_path, capsys):
    out = tmp_path / "manifests"
    args = _parse(f"deploy k8s --image {IMAGE} --gpu nvidia-h100-80gb --sharing mig --partition-size 1g.20gb "
                  f"--replicas 2 --max-replicas 8 --drain-timeout 60 --namespace serving --out {out}")
    assert args.handler(args) == 0
    written = sorted(path.name for path in out.iterdir())
    assert written == ["deployment.yaml", "horizontalpodautoscaler.yaml", "service.yaml"]
    for path in out.iterdir():
        (manifest,) = list(yaml.safe_load_all(path.read_text()))
        validate(manifest)
        assert manifest["metadata"]["namespace"] == "serving"
    deployment = yaml.safe_load((out / "deployment.yaml").read_text())
    assert deployment["spec"]["template"]["spec"]["nodeSelector"][PARTITION_LABEL] == "1g.20gb"
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 75
    printed = capsys.readouterr().out
    assert f"kubectl apply -f {out}" in printed and "deployment.yaml" in printed
    # a second run into the same folder replaces its own files, but refuses to leave another run's beside them
    args = _parse(f"deploy k8s --image {IMAGE} --backend ray --ray-version 2.60.0 --out {out}")
    with pytest.raises(ValueError, match="`--out`.*deployment.yaml"):
        args.handler(args)


def test_building_the_parser_imports_neither_torch_nor_fastapi():
    code = ("import argparse, sys; from baton.deploy.k8s import add_parser; "
            "p = argparse.ArgumentParser(); add_parser(p.add_subparsers()); "
            "print(sorted(m for m in ('torch', 'diffusers', 'fastapi', 'ray') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == "[]"


def _parse(command: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="baton")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(command.split())

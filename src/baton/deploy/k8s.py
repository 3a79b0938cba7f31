"""``baton deploy k8s``: Kubernetes manifests for GKE, one YAML file per object.

A Deployment running ``baton serve`` (GPU resources, GKE node selectors for the accelerator and the GPU-sharing
strategy, probes on ``/readyz`` and ``/healthz``, a grace period that fits the drain), a Service and a
HorizontalPodAutoscaler on baton's ``baton_pending_requests`` gauge; or, with ``--backend ray``, a KubeRay
``RayService`` running the Ray Serve application ``baton.deploy.ray:build_app``.

Plain data and PyYAML only: building the parser or the manifests imports neither torch nor FastAPI.
docs/deployment.md walks through using them.
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from baton.config import DTYPE_NAMES
from baton.optim.presets import PRESETS

Sharing = Literal["none", "time-sharing", "mps", "mig"]
Backend = Literal["deployment", "ray"]

SHARING_MODES: tuple[str, ...] = ("none", "time-sharing", "mps", "mig")
BACKENDS: tuple[str, ...] = ("deployment", "ray")
SERVICE_TYPES: tuple[str, ...] = ("ClusterIP", "LoadBalancer", "NodePort")

# GKE's node labels. A pod picks GPU nodes with nodeSelector and still asks for `nvidia.com/gpu: 1`; GKE's device
# plugin decides what that one "GPU" is (a whole GPU, a MIG slice, or a shared slot). Source for all four labels:
# cloud.google.com/kubernetes-engine/docs/concepts/timesharing-gpus ("How the GPU sharing strategies work").
ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"
SHARING_LABEL = "cloud.google.com/gke-gpu-sharing-strategy"
MAX_CLIENTS_LABEL = "cloud.google.com/gke-max-shared-clients-per-gpu"
PARTITION_LABEL = "cloud.google.com/gke-gpu-partition-size"
SHARING_LABEL_VALUES = {"time-sharing": "time-sharing", "mps": "mps"}
"""The strategy label's values as GKE's how-to pages select them (docs/how-to/timesharing-gpus and
docs/how-to/nvidia-mps-gpus)."""
MAX_SHARED_CLIENTS_RANGE = (2, 48)
"""GKE: at most 48 containers share one physical GPU (docs/how-to/timesharing-gpus), at least 2 (the ComputeClass
reference gives 2-48 for ``maxSharedClientsPerGPU``)."""

GKE_GPUS: tuple[str, ...] = (
    "nvidia-tesla-t4", "nvidia-tesla-p4", "nvidia-tesla-p100", "nvidia-tesla-v100", "nvidia-l4",
    "nvidia-rtx-pro-6000", "nvidia-tesla-a100", "nvidia-a100-80gb", "nvidia-h100-80gb", "nvidia-h100-mega-80gb",
    "nvidia-h200-141gb", "nvidia-b200", "nvidia-gb200", "nvidia-gb300",
)
"""Values of ``cloud.google.com/gke-accelerator`` (Compute Engine's accelerator names, cloud.google.com/compute/
docs/gpus). A name outside this list is refused rather than written: a typo would leave every pod Pending."""

_MIG_80GB = {"1g.10gb": 7, "1g.20gb": 4, "2g.20gb": 3, "3g.40gb": 2, "4g.40gb": 1, "7g.80gb": 1}
MIG_PARTITIONS: dict[str, dict[str, int]] = {
    "nvidia-tesla-a100": {"1g.5gb": 7, "1g.10gb": 4, "2g.10gb": 3, "3g.20gb": 2, "4g.20gb": 1, "7g.40gb": 1},
    "nvidia-a100-80gb": _MIG_80GB, "nvidia-h100-80gb": _MIG_80GB, "nvidia-h100-mega-80gb": _MIG_80GB,
    "nvidia-h200-141gb": {"1g.18gb": 7, "1g.35gb": 4, "2g.35gb": 3, "3g.71gb": 2, "4g.71gb": 1, "7g.141gb": 1},
    "nvidia-b200": {"1g.23gb": 7, "1g.45gb": 4, "2g.45gb": 3, "3g.90gb": 2, "4g.90gb": 1, "7g.180gb": 1},
    "nvidia-rtx-pro-6000": {"1g.24gb": 4, "2g.48gb": 2, "4g.96gb": 1},
}
"""MIG partition size -> instances per GPU. The profiles are NVIDIA's (MIG user guide; the media-engine ``+me``
variants left out); GKE's gpus-multi page lists a subset per GPU (for the A100 40GB: 1g.5gb, 2g.10gb, 3g.20gb,
7g.40gb), and gcloud refuses the rest when the node pool is created. The RTX PRO 6000 sizes are those of GKE's
ComputeClass reference, their counts worked out from its 96 GB."""

SERVER_HARD_EXIT_MARGIN_S = 10.0
"""``baton.server.run.HARD_EXIT_AFTER_DRAIN_S``: the server ends itself this long after its drain timeout, whatever
hangs. Copied, not imported (that module imports uvicorn and FastAPI); a test keeps the two equal."""
RAY_APP_IMPORT_PATH = "baton.deploy.ray:build_app"
RAY_SERVE_PORT = 8000
"""Ray Serve's HTTP proxy port; KubeRay's ``<name>-serve-svc`` Service exposes it."""
DEFAULT_RAY_VERSION = "2.60.0"

_DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?")


@dataclass(frozen=True, slots=True)
class K8sOptions:
    """What ``baton deploy k8s`` writes. Each field is one flag (``max_shared_clients`` is
    ``--max-shared-clients``); invalid values and combinations raise ``ValueError`` naming the field."""

    image: str
    """Container image holding baton (and, for ``backend="ray"``, ``baton[ray]``); see docs/deployment.md."""
    name: str = "baton"
    """Name of every object (a DNS label)."""
    namespace: str = "default"
    model: str = "shapes"
    """Model(s) to serve, comma-separated, as ``baton serve --model`` takes them."""
    gpu: str = "nvidia-l4"
    """A GKE accelerator (``GKE_GPUS``), or ``none`` for a CPU-only deployment (to try the manifests anywhere)."""
    sharing: Sharing = "none"
    """How pods share a physical GPU: ``none`` (a whole GPU each), ``time-sharing``, ``mps`` or ``mig``."""
    max_shared_clients: int | None = None
    """Pods per physical GPU, with ``time-sharing`` or ``mps`` (GKE: 2 to 48)."""
    partition_size: str | None = None
    """The MIG slice each pod gets, with ``mig`` (``1g.10gb`` on an H100: 7 per GPU)."""
    replicas: int = 1
    """Pods to start with, and the autoscaler's minimum."""
    max_replicas: int = 4
    """The autoscaler's maximum; equal to ``replicas``: a fixed size, no HorizontalPodAutoscaler."""
    target_pending: float = 4.0
    """Requests in flight per pod the autoscaler aims at (Ray Serve: ``target_ongoing_requests``)."""
    metric_name: str = "baton_pending_requests"
    """The per-pod metric the HorizontalPodAutoscaler reads through the custom metrics API; its name there depends
    on the adapter (GKE's Managed Prometheus adapter: ``prometheus.googleapis.com|baton_pending_requests|gauge``)."""
    port: int = 8000
    drain_timeout_s: float = 30.0
    """``baton serve --drain-timeout``: after SIGTERM, how long requests in flight may take to finish."""
    prestop_s: float = 5.0
    """preStop sleep: time for the endpoints controller to take the pod out of the Service before SIGTERM."""
    startup_timeout_s: float = 600.0
    """How long loading (and compiling) may take before the pod is restarted (the startupProbe)."""
    preset: str | None = None
    dtype: str | None = None
    cpu: str = "4"
    """CPU request and limit of the serving container (a Kubernetes quantity)."""
    memory: str = "16Gi"
    """Memory request and limit of the serving container."""
    api_key_secret: str | None = None
    """A Secret whose ``keys`` entry holds the API keys (comma-separated), passed as ``$BATON_API_KEYS``."""
    service_type: str = "ClusterIP"
    backend: Backend = "deployment"
    """``deployment``: Deployment, Service and HorizontalPodAutoscaler; ``ray``: a KubeRay RayService."""
    ray_version: str = DEFAULT_RAY_VERSION
    """``rayVersion`` of the RayService: the Ray release in the image."""

    def __post_init__(self) -> None:
        # 1. names and plain values
        for field in ("name", "namespace"):
            _require(len(getattr(self, field)) <= 63 and _DNS_LABEL.fullmatch(getattr(self, field)) is not None,
                     field, getattr(self, field), "must be a DNS label: lowercase letters, digits and '-', "
                     "starting with a letter, at most 63 characters")
        _require(bool(self.image) and not any(c.isspace() for c in self.image), "image", self.image,
                 "must be an image reference, like us-docker.pkg.dev/PROJECT/REPO/baton:TAG")
        models = self.model.split(",")
        _require(all(m.strip() == m and m for m in models), "model", self.model,
                 "must be model names separated by commas, without spaces")
        _require(self.replicas >= 1, "replicas", self.replicas, "must be >= 1")
        _require(self.max_replicas >= self.replicas, "max_replicas", self.max_replicas,
                 f"must be >= `replicas` ({self.replicas})")
        _require(self.target_pending > 0, "target_pending", self.target_pending, "must be > 0")
        _require(bool(self.metric_name) and " " not in self.metric_name, "metric_name", self.metric_name,
                 "must be a metric name")
        _require(1 <= self.port <= 65535, "port", self.port, "must be between 1 and 65535")
        _require(self.drain_timeout_s > 0, "drain_timeout_s", self.drain_timeout_s, "must be > 0")
        _require(self.prestop_s >= 0, "prestop_s", self.prestop_s, "must be >= 0")
        _require(self.startup_timeout_s > 0, "startup_timeout_s", self.startup_timeout_s, "must be > 0")
        _require(self.preset is None or self.preset in PRESETS, "preset", self.preset, f"must be one of {PRESETS}")
        _require(self.dtype is None or self.dtype in DTYPE_NAMES, "dtype", self.dtype,
                 f"must be one of {DTYPE_NAMES}")
        for field in ("cpu", "memory"):
            _require(_QUANTITY.fullmatch(getattr(self, field)) is not None, field, getattr(self, field),
                     "must be a Kubernetes quantity, like 4, 500m or 16Gi")
        _require(self.api_key_secret is None or _DNS_LABEL.fullmatch(self.api_key_secret) is not None,
                 "api_key_secret", self.api_key_secret, "must be the name of a Secret")
        _require(self.service_type in SERVICE_TYPES, "service_type", self.service_type,
                 f"must be one of {SERVICE_TYPES}")
        _require(self.backend in BACKENDS, "backend", self.backend, f"must be one of {BACKENDS}")
        _require(re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+", self.ray_version) is not None, "ray_version",
                 self.ray_version, "must be a Ray release, like 2.40.0")
        # 2. the GPU and how pods share it
        _require(self.gpu == "none" or self.gpu in GKE_GPUS, "gpu", self.gpu,
                 f"must be a GKE accelerator ({', '.join(GKE_GPUS)}) or none")
        _require(self.sharing in SHARING_MODES, "sharing", self.sharing, f"must be one of {SHARING_MODES}")
        if self.gpu == "none" and self.sharing != "none":
            raise ValueError(f"`sharing` {self.sharing!r} needs a GPU, and `gpu` is 'none'")
        shared = self.sharing in ("time-sharing", "mps")
        if self.max_shared_clients is not None and not shared:
            raise ValueError(f"`max_shared_clients` ({self.max_shared_clients!r}) is only for `sharing` time-sharing "
                             f"or mps, and `sharing` is {self.sharing!r}")
        if shared:
            low, high = MAX_SHARED_CLIENTS_RANGE
            if self.max_shared_clients is None:
                raise ValueError(f"`max_shared_clients` is required with `sharing` {self.sharing!r}: pods per "
                                 f"physical GPU ({low}-{high}), the node pool's max-shared-clients-per-gpu")
            _require(low <= self.max_shared_clients <= high, "max_shared_clients", self.max_shared_clients,
                     f"must be between {low} and {high} (GKE's limits on pods per physical GPU)")
        if self.partition_size is not None and self.sharing != "mig":
            raise ValueError(f"`partition_size` ({self.partition_size!r}) is only for `sharing` mig, and `sharing` "
                             f"is {self.sharing!r}")
        if self.sharing == "mig":
            sizes = MIG_PARTITIONS.get(self.gpu)
            if sizes is None:
                raise ValueError(f"`gpu` {self.gpu!r} does not support MIG (`sharing` 'mig'); MIG GPUs: "
                                 f"{', '.join(MIG_PARTITIONS)}")
            _require(self.partition_size in sizes, "partition_size", self.partition_size,
                     f"must be one of {', '.join(sizes)} on {self.gpu}")
        # 3. what the Ray Serve application cannot take
        if self.backend == "ray":
            # Ray shares a GPU itself: a fractional num_gpus packs 1/num_gpus replicas (processes) onto one worker
            # pod's GPU. Under GKE's MPS each pod gets 1/K of the GPU's threads and memory, which the replicas
            # packed in it would then split again.
            if self.sharing == "mps":
                raise ValueError("`sharing` 'mps' is not available with `backend` 'ray': Ray packs 1/num_gpus "
                                 "replicas onto each worker's GPU itself, and MPS would cap the whole worker pod "
                                 "to 1/K of the GPU; use time-sharing")
            for field in ("preset", "dtype", "api_key_secret"):
                if getattr(self, field) is not None:
                    raise ValueError(f"`{field}` {getattr(self, field)!r} is not passed to the Ray Serve "
                                     "application (its args are models, num_gpus, min_replicas, max_replicas, "
                                     "target_ongoing_requests); drop it or use `backend` 'deployment'")
            if self.service_type != "ClusterIP":
                raise ValueError(f"`service_type` {self.service_type!r} is for `backend` 'deployment'; KubeRay "
                                 "makes the Ray Serve Service (<name>-serve-svc) itself")

    @property
    def termination_grace_period_s(self) -> int:
        """The kubelet's SIGKILL deadline, counted from the start of termination: the preStop sleep, then the drain
        after SIGTERM, then the server's own last-resort exit margin."""
        return math.ceil(self.prestop_s + self.drain_timeout_s + SERVER_HARD_EXIT_MARGIN_S)

    @property
    def num_gpus_per_replica(self) -> float:
        """Ray Serve's ``num_gpus`` per replica: 1/K under time-sharing, a whole device (or MIG slice) otherwise."""
        if self.gpu == "none":
            return 0.0
        if self.sharing == "time-sharing":
            return 1.0 / self.max_shared_clients
        return 1.0

    @property
    def autoscaled(self) -> bool:
        return self.max_replicas > self.replicas


def _require(ok: bool, field: str, value, rule: str) -> None:
    if not ok:
        raise ValueError(f"`{field}` {rule}, got {value!r}")


# ---------------------------------------------------------------------------------------------------- manifests


def build_manifests(options: K8sOptions) -> list[dict]:
    """The objects to apply, in order: Deployment, Service and (when autoscaled) HorizontalPodAutoscaler; or one
    RayService with ``backend="ray"``."""
    if options.backend == "ray":
        return [ray_service(options)]
    manifests = [deployment(options), service(options)]
    if options.autoscaled:
        manifests.append(autoscaler(options))
    return manifests


def node_selector(options: K8sOptions) -> dict[str, str]:
    """The GKE labels a pod must find on its node (label values are strings, the client count too)."""
    if options.gpu == "none":
        return {}
    selector = {ACCELERATOR_LABEL: options.gpu}
    if options.sharing in SHARING_LABEL_VALUES:
        selector[SHARING_LABEL] = SHARING_LABEL_VALUES[options.sharing]
        selector[MAX_CLIENTS_LABEL] = str(options.max_shared_clients)
    elif options.sharing == "mig":
        selector[PARTITION_LABEL] = options.partition_size
    return selector


def serve_command(options: K8sOptions) -> list[str]:
    """The container's command line: ``baton serve`` on every interface, draining for the grace period's share."""
    command = ["baton", "serve", "--host", "0.0.0.0", "--port", str(options.port), "--model", options.model,
               "--device", "cpu" if options.gpu == "none" else "cuda", "--drain-timeout",
               f"{options.drain_timeout_s:g}"]
    if options.preset is not None:
        command += ["--preset", options.preset]
    if options.dtype is not None:
        command += ["--dtype", options.dtype]
    return command


def deployment(options: K8sOptions) -> dict:
    """The Deployment running ``baton serve``, one GPU (or GPU share) per pod."""
    labels = _labels(options)
    container = {
        "name": "baton",
        "image": options.image,
        "command": serve_command(options),
        "ports": [{"name": "http", "containerPort": options.port, "protocol": "TCP"}],
        "env": _env(options),
        "resources": _resources(options),
        # loading (and compile warm-up) takes minutes; until /readyz is green once, liveness does not run
        "startupProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 10, "timeoutSeconds": 2,
                         "failureThreshold": max(1, math.ceil(options.startup_timeout_s / 10))},
        # 503 while loading, draining or stuck (the watchdog): the pod leaves the Service, nothing restarts it
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5, "timeoutSeconds": 2,
                           "failureThreshold": 2},
        # 503 only once the engine failed to load or died: restart; a slow step stays 200
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10, "timeoutSeconds": 5,
                          "failureThreshold": 3},
        "lifecycle": _prestop(options),
        "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
    }
    pod_spec = {
        "terminationGracePeriodSeconds": options.termination_grace_period_s,
        "enableServiceLinks": False,  # no BATON_SERVICE_HOST & co. from the Service named like the app
        "containers": [container],
        "volumes": [{"name": "cache", "emptyDir": {}}],
    }
    if options.gpu != "none":
        pod_spec["nodeSelector"] = node_selector(options)
    if options.sharing == "mps":
        # GKE's MPS how-to: the pod shares the node's IPC namespace to reach the MPS control daemon
        # (docs/how-to/nvidia-mps-gpus, "Deploy workloads that use NVIDIA MPS")
        pod_spec["hostIPC"] = True
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(options),
        "spec": {
            "replicas": options.replicas,
            "selector": {"matchLabels": labels},
            # a new pod must be ready before an old one goes: GPU capacity never dips during a rollout (it needs
            # room for one more pod, which the cluster autoscaler adds)
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "progressDeadlineSeconds": max(600, math.ceil(options.startup_timeout_s) + 120),
            "template": {
                "metadata": {"labels": labels, "annotations": {
                    "prometheus.io/scrape": "true", "prometheus.io/port": str(options.port),
                    "prometheus.io/path": "/metrics"}},
                "spec": pod_spec,
            },
        },
    }


def service(options: K8sOptions) -> dict:
    """The Service in front of the ready pods, port 80 to the pods' ``http`` port."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(options),
        "spec": {"type": options.service_type, "selector": _labels(options),
                 "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]},
    }


def autoscaler(options: K8sOptions) -> dict:
    """The HorizontalPodAutoscaler: pods on requests in flight per pod (a Pods metric), not CPU.

    CPU utilisation says nothing about a GPU server (its CPU idles while the GPU is saturated). Requests in flight
    per pod (``baton_pending_requests``) rise as soon as arrivals outpace the GPU, and are what Ray Serve's
    autoscaler reads too. The metric reaches the HPA through the custom metrics API, so the cluster needs a
    metrics adapter (GKE: Managed Prometheus and its Stackdriver adapter; elsewhere prometheus-adapter)."""
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(options),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": options.name},
            "minReplicas": options.replicas,
            "maxReplicas": options.max_replicas,
            "metrics": [{"type": "Pods", "pods": {
                "metric": {"name": options.metric_name},
                "target": {"type": "AverageValue", "averageValue": f"{options.target_pending:g}"}}}],
            # a GPU pod takes minutes to load: scale down slowly, one pod a minute after 5 quiet minutes
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300,
                                       "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}},
        },
    }


def ray_service(options: K8sOptions) -> dict:
    """A KubeRay ``RayService`` (``ray.io/v1``): a Ray cluster of one CPU head and GPU workers, running the Ray
    Serve application ``baton.deploy.ray:build_app``.

    Ray, not Kubernetes, scales and routes here: Serve's autoscaler adds replicas on ongoing requests, and the
    Ray autoscaler (``enableInTreeAutoscaling``) adds worker pods for them. One worker pod holds one GPU (or MIG
    slice), on the same GKE node selectors as the Deployment; with time-sharing Ray packs K replicas onto it
    (``num_gpus`` 1/K), so the workers take whole GPUs rather than GKE time-sharing slots, which would share twice."""
    num_gpus = options.num_gpus_per_replica
    per_worker = 1.0 if num_gpus == 0 else num_gpus  # CPU-only: one replica per worker pod
    args = {
        "models": options.model,
        "num_gpus": num_gpus,
        "min_replicas": options.replicas,
        "max_replicas": options.max_replicas,
        "target_ongoing_requests": options.target_pending,
    }
    serve_config = {"applications": [{"name": options.name, "route_prefix": "/",
                                       "import_path": RAY_APP_IMPORT_PATH, "args": args}]}
    head = {
        "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0", "num-gpus": "0"},  # no replica on the head
        "template": {"metadata": {"labels": _labels(options)}, "spec": {"containers": [{
            "name": "ray-head",
            "image": options.image,
            "ports": [{"name": "gcs-server", "containerPort": 6379}, {"name": "dashboard", "containerPort": 8265},
                      {"name": "client", "containerPort": 10001}, {"name": "serve", "containerPort": RAY_SERVE_PORT}],
            "resources": {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"cpu": "2", "memory": "8Gi"}},
            "lifecycle": {"preStop": {"exec": {"command": ["/bin/sh", "-c", "ray stop"]}}},
        }]}},
    }
    worker_spec = {
        "terminationGracePeriodSeconds": options.termination_grace_period_s,
        "containers": [{
            "name": "ray-worker",
            "image": options.image,
            "env": _env(options),
            "resources": _resources(options),
            "lifecycle": {"preStop": {"exec": {"command": ["/bin/sh", "-c", "ray stop"]}}},
            "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
        }],
        "volumes": [{"name": "cache", "emptyDir": {}}],
    }
    if options.gpu != "none":
        worker_spec["nodeSelector"] = {key: value for key, value in node_selector(options).items()
                                       if key not in (SHARING_LABEL, MAX_CLIENTS_LABEL)}
    workers = {
        "groupName": "gpu" if options.gpu != "none" else "cpu",
        "replicas": math.ceil(options.replicas * per_worker - 1e-9),
        "minReplicas": math.ceil(options.replicas * per_worker - 1e-9),
        "maxReplicas": math.ceil(options.max_replicas * per_worker - 1e-9),
        "rayStartParams": {},  # KubeRay reads the GPU count from the container's nvidia.com/gpu limit
        "template": {"metadata": {"labels": _labels(options)}, "spec": worker_spec},
    }
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": _metadata(options),
        "spec": {
            "serveConfigV2": _dump(serve_config),
            "rayClusterConfig": {
                "rayVersion": options.ray_version,
                "enableInTreeAutoscaling": True,
                "headGroupSpec": head,
                "workerGroupSpecs": [workers],
            },
        },
    }


def _metadata(options: K8sOptions) -> dict:
    return {"name": options.name, "namespace": options.namespace, "labels": _labels(options)}


def _labels(options: K8sOptions) -> dict[str, str]:
    return {"app.kubernetes.io/name": "baton", "app.kubernetes.io/instance": options.name}


def _env(options: K8sOptions) -> list[dict]:
    env = [{"name": "HF_HOME", "value": "/cache/huggingface"}]  # downloaded weights go to the pod's emptyDir
    if options.api_key_secret is not None:
        env.append({"name": "BATON_API_KEYS",
                    "valueFrom": {"secretKeyRef": {"name": options.api_key_secret, "key": "keys"}}})
    return env


def _resources(options: K8sOptions) -> dict:
    amounts = {"cpu": options.cpu, "memory": options.memory}
    limits = dict(amounts)
    if options.gpu != "none":
        limits["nvidia.com/gpu"] = 1  # one GPU, MIG slice or shared slot: GKE refuses more under sharing
    return {"requests": amounts, "limits": limits}


def _prestop(options: K8sOptions) -> dict:
    # the kubelet sends SIGTERM only after preStop returns: meanwhile the endpoints controller takes the pod out
    # of the Service, so no new request arrives once the server starts refusing them
    return {"preStop": {"exec": {"command": ["sleep", f"{options.prestop_s:g}"]}}}


# --------------------------------------------------------------------------------------------------------- files


def write_manifests(manifests: list[dict], out: Path) -> list[Path]:
    """Write one ``<kind>.yaml`` per object into ``out`` (created if missing) and return the paths.

    Raises ``ValueError`` when ``out`` already holds other manifest files: ``kubectl apply -f DIR`` would apply
    them too (a Deployment left from an earlier run next to a new RayService)."""
    from baton import __version__

    names = [f"{manifest['kind'].lower()}.yaml" for manifest in manifests]
    if out.exists():
        if not out.is_dir():
            raise ValueError(f"`out` {str(out)!r} is a file; give a folder (it is created if missing)")
        stale = sorted(p.name for p in out.iterdir() if p.suffix in (".yaml", ".yml", ".json") and p.name not in names)
        if stale:
            raise ValueError(f"`out` {str(out)!r} already holds {', '.join(stale)}, which `kubectl apply -f` would "
                             "apply too; remove them or give another folder")
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, manifest in zip(names, manifests, strict=True):
        header = (f"# Written by `baton deploy k8s` (baton {__version__}). Change the flags and write it again "
                  "rather than editing it.\n")
        path = out / name
        path.write_text(header + _dump(manifest))
        paths.append(path)
    return paths


def _dump(data: dict) -> str:
    import yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data) -> bool:  # a dict used twice is written twice, not as &anchor and *alias
            return True

        def represent_str(self, text: str):  # serveConfigV2, a YAML document in a string, stays readable
            return self.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None)

    Dumper.add_representer(str, Dumper.represent_str)
    return yaml.dump(data, Dumper=Dumper, sort_keys=False)


# ----------------------------------------------------------------------------------------------------------- CLI

_FLAGS: tuple[tuple[str, str, dict], ...] = (
    ("--image", "image", {"required": True,
                          "help": "container image with baton installed (see docs/deployment.md for a Dockerfile)"}),
    ("--name", "name", {"default": "baton", "help": "name of every object"}),
    ("--namespace", "namespace", {"default": "default"}),
    ("--model", "model", {"default": "shapes", "help": "model(s) to serve, comma-separated"}),
    ("--gpu", "gpu", {"default": "nvidia-l4",
                      "help": "GKE accelerator (cloud.google.com/gke-accelerator), or none: a CPU-only deployment"}),
    ("--sharing", "sharing", {"default": "none", "choices": SHARING_MODES,
                              "help": "how pods share a physical GPU (see docs/deployment.md)"}),
    ("--max-shared-clients", "max_shared_clients", {"type": int, "default": None,
                                                    "help": "pods per GPU with time-sharing or mps (2-48; the node "
                                                            "pool's max-shared-clients-per-gpu)"}),
    ("--partition-size", "partition_size", {"default": None, "help": "MIG slice per pod with --sharing mig, e.g. "
                                                                     "1g.10gb on nvidia-h100-80gb"}),
    ("--replicas", "replicas", {"type": int, "default": 1, "help": "pods to start with; the autoscaler's minimum"}),
    ("--max-replicas", "max_replicas", {"type": int, "default": 4,
                                        "help": "the autoscaler's maximum (equal to --replicas: no autoscaler)"}),
    ("--target-pending", "target_pending", {"type": float, "default": 4.0,
                                            "help": "requests in flight per pod the autoscaler aims at"}),
    ("--metric-name", "metric_name", {"default": "baton_pending_requests",
                                      "help": "that metric's name in the custom metrics API (depends on the adapter)"}),
    ("--port", "port", {"type": int, "default": 8000, "help": "port baton serves on inside the pod"}),
    ("--drain-timeout", "drain_timeout_s", {"type": float, "default": 30.0,
                                            "help": "baton serve --drain-timeout (seconds)"}),
    ("--prestop", "prestop_s", {"type": float, "default": 5.0,
                                "help": "seconds the pod waits before SIGTERM, while it leaves the Service"}),
    ("--startup-timeout", "startup_timeout_s", {"type": float, "default": 600.0,
                                                "help": "seconds loading may take before the pod is restarted"}),
    ("--preset", "preset", {"default": None, "choices": PRESETS, "help": "baton serve --preset"}),
    ("--dtype", "dtype", {"default": None, "choices": DTYPE_NAMES, "help": "baton serve --dtype"}),
    ("--cpu", "cpu", {"default": "4", "help": "CPU request and limit per pod"}),
    ("--memory", "memory", {"default": "16Gi", "help": "memory request and limit per pod"}),
    ("--api-key-secret", "api_key_secret", {"default": None,
                                            "help": "Secret whose `keys` entry holds the API keys, comma-separated "
                                                    "(default: no auth)"}),
    ("--service-type", "service_type", {"default": "ClusterIP", "choices": SERVICE_TYPES}),
    ("--backend", "backend", {"default": "deployment", "choices": BACKENDS,
                              "help": "deployment: Deployment, Service, HorizontalPodAutoscaler; ray: a KubeRay "
                                      "RayService"}),
    ("--ray-version", "ray_version", {"default": None,
                                      "help": "rayVersion of the RayService (default: the Ray installed here, "
                                              f"else {DEFAULT_RAY_VERSION})"}),
)
"""``baton deploy k8s``'s flags: (flag, K8sOptions field, argparse keywords). Errors name fields; the handler
turns them back into these flags."""


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``deploy`` (with its ``k8s`` subcommand) to ``commands``, the subparsers of ``baton``'s parser.

    The parsers are made by ``commands``' own parser class (baton's one-line errors and defaults in the help);
    ``args.handler(args)`` writes the manifests and returns the exit status."""
    deploy = commands.add_parser("deploy", help="write deployment manifests (Kubernetes and GKE, KubeRay)")
    targets = deploy.add_subparsers(dest="target", required=True)
    k8s = targets.add_parser(
        "k8s", help="Kubernetes manifests for GKE: Deployment, Service and autoscaler, or a KubeRay RayService",
        description="Write Kubernetes manifests for baton on GKE into --out, one YAML file per object, and print "
                    "the kubectl command that applies them. See docs/deployment.md.",
    )
    for flag, field, kwargs in _FLAGS:
        metavar = None if "choices" in kwargs else flag.removeprefix("--").replace("-", "_").upper()
        k8s.add_argument(flag, dest=field, metavar=metavar, **kwargs)
    k8s.add_argument("--out", type=Path, default=Path("k8s"), metavar="DIR", help="folder to write the manifests to")
    k8s.set_defaults(handler=_deploy_k8s)
    return deploy


def _deploy_k8s(args: argparse.Namespace) -> int:
    fields = {field: getattr(args, field) for _, field, _ in _FLAGS}
    if fields["ray_version"] is None:
        fields["ray_version"] = _installed_ray_version()
    try:
        options = K8sOptions(**fields)
        manifests = build_manifests(options)
        paths = write_manifests(manifests, args.out)
    except ValueError as exc:
        message = str(exc).replace("`out`", "`--out`")
        for flag, field, _ in _FLAGS:
            message = message.replace(f"`{field}`", f"`{flag}`")
        raise ValueError(message) from None
    lines = [f"wrote {path} ({manifest['kind']} {options.namespace}/{options.name})"
             for path, manifest in zip(paths, manifests, strict=True)]
    print("\n".join([*lines, *_summary(options), f"apply with: kubectl apply -f {args.out}"]))
    return 0


def _summary(options: K8sOptions) -> list[str]:
    gpu, clients = options.gpu, options.max_shared_clients
    where = "CPU only" if gpu == "none" else {
        "none": f"one {gpu} per pod", "time-sharing": f"{gpu} time-shared by up to {clients} pods",
        "mps": f"{gpu} shared by up to {clients} pods through MPS (hostIPC)",
        "mig": f"{gpu} MIG slice {options.partition_size} per pod"}[options.sharing]
    if options.backend == "ray":
        where = f"{gpu} per worker pod, {clients} replicas on each" if options.sharing == "time-sharing" else where
        return [f"RayService: {where}; {options.replicas}..{options.max_replicas} Ray Serve replicas at "
                f"{options.target_pending:g} ongoing requests each, num_gpus {options.num_gpus_per_replica:g}; "
                f"requests go to {options.name}-serve-svc:{RAY_SERVE_PORT}"]
    return [f"pods: {where}; SIGKILL {options.termination_grace_period_s} s after termination starts (preStop "
            f"{options.prestop_s:g} s + drain {options.drain_timeout_s:g} s + {SERVER_HARD_EXIT_MARGIN_S:g} s)",
            f"autoscaler: {options.replicas}..{options.max_replicas} pods at {options.target_pending:g} requests in "
            f"flight per pod ({options.metric_name}: needs a custom metrics adapter)" if options.autoscaled else
            f"no autoscaler: --max-replicas equals --replicas ({options.replicas} pods)"]


def _installed_ray_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("ray")  # the distribution's metadata; ray itself is not imported
    except metadata.PackageNotFoundError:
        return DEFAULT_RAY_VERSION

"""``baton serve``'s scale-out flags: ``--devices``, ``--replicas-per-device`` and ``--threads-per-engine`` for
engine processes behind the router, and ``--backend ray`` with Ray Serve's placement flags. Building the parser
imports neither torch nor ray."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable

from baton.config import EngineConfig


def add_scale_out_args(serve: argparse.ArgumentParser) -> None:
    scaling = serve.add_argument_group("scaling out (docs/deployment.md)")
    scaling.add_argument("--devices", default=None, metavar="LIST",
                         help="one engine process per device behind a router in this process: GPU indices (0,1,2,3), "
                              "cuda:N or cpu (cpu,cpu: two CPU engines); replaces --device")
    scaling.add_argument("--replicas-per-device", type=int, default=1, metavar="K",
                         help="engine processes per device (GPU sharing: each may use 0.95/K of its memory)")
    scaling.add_argument("--threads-per-engine", type=int, default=None, metavar="N",
                         help="intra-op threads per engine process (default: 1 on a CPU; on GPUs the host's cores "
                              "divided among the processes)")
    scaling.add_argument("--backend", choices=("local", "ray"), default="local",
                         help="local: engines in this process (or --devices' processes); ray: Ray Serve replicas "
                              "(pip install 'baton[ray]')")
    ray = serve.add_argument_group("Ray Serve (--backend ray; docs/deployment.md)")
    ray.add_argument("--num-gpus", type=float, default=None,
                     help="GPUs per replica; a fraction shares a GPU (default: 1; 0 with --device cpu)")
    ray.add_argument("--num-cpus", type=float, default=1.0, help="CPUs per replica")
    ray.add_argument("--replicas", type=int, default=None, help="a fixed number of replicas (default 1)")
    ray.add_argument("--min-replicas", type=int, default=None, help="autoscaling: fewest replicas")
    ray.add_argument("--max-replicas", type=int, default=None, help="autoscaling: most replicas")
    ray.add_argument("--target-ongoing-requests", type=float, default=4.0,
                     help="autoscaling: in-flight requests per replica to aim at")
    ray.add_argument("--max-ongoing-requests", type=int, default=16, help="most requests Ray sends one replica at once")
    ray.add_argument("--ray-address", default=None,
                     help="join this cluster (auto, HOST:PORT, ray://HOST:10001); default: a Ray of its own")


def serve_placement(args: argparse.Namespace):
    """Check the scale-out flags together; returns the engine processes' devices (``None``: one engine in the
    server's process) and the device whose type the settings are checked for."""
    import torch

    from baton.device import resolve_device

    ray_only = [flag for flag, value in (("--num-gpus", args.num_gpus), ("--replicas", args.replicas),
                                         ("--min-replicas", args.min_replicas), ("--max-replicas", args.max_replicas),
                                         ("--ray-address", args.ray_address)) if value is not None]
    if ray_only and args.backend != "ray":
        verb = "applies" if len(ray_only) == 1 else "apply"
        raise ValueError(f"{', '.join(f'`{flag}`' for flag in ray_only)} {verb} only with `--backend ray`")
    if args.replicas_per_device < 1:
        raise ValueError(f"`--replicas-per-device` must be >= 1, got {args.replicas_per_device}")
    if args.threads_per_engine is not None and args.threads_per_engine < 1:
        raise ValueError(f"`--threads-per-engine` must be >= 1, got {args.threads_per_engine}")
    devices = _devices(args)
    if args.backend == "ray":
        if args.threads_per_engine is not None:
            raise ValueError("`--threads-per-engine` is for the local backend's engine processes; with `--backend "
                             "ray`, `--num-cpus` sets a replica's threads on a CPU")
        if devices is not None:
            raise ValueError("`--devices` and `--replicas-per-device` are for the local backend; with `--backend "
                             "ray`, Ray places the replicas (`--replicas`, `--num-gpus`)")
        # the replicas run on Ray's workers, which may have GPUs this host lacks (a CPU-only head): a GPU is
        # assumed when they ask for one or join a cluster
        if args.device == "cpu" or args.num_gpus == 0:
            return None, torch.device("cpu")
        if args.ray_address or args.num_gpus:
            return None, torch.device("cuda")
        return None, torch.device(resolve_device(args.device).type)
    if devices is None and args.threads_per_engine is not None:
        raise ValueError("`--threads-per-engine` applies to engine processes: give `--devices` or "
                         "`--replicas-per-device` too")
    for device in devices or ():
        resolve_device(device)  # a device that is not here fails now
    return devices, resolve_device(devices[0] if devices else args.device)


def engine_factory(args: argparse.Namespace, devices: list[str] | None,
                   stuck_after_s: float) -> Callable[[EngineConfig], object]:
    """What serves the requests: an Engine in the server's process, or a router over engine processes."""
    if devices is None:
        from baton import Engine

        return Engine
    from baton.cluster import Router

    return functools.partial(Router, devices=devices, replicas_per_device=args.replicas_per_device,
                             threads_per_engine=args.threads_per_engine, stuck_after_s=stuck_after_s)


def run_on_ray(args: argparse.Namespace, engine_config: EngineConfig, server_config,
               announce: Callable[[str], None]) -> int:
    """``baton serve --backend ray``: deploy with Ray Serve and serve until a signal."""
    from baton.deploy.ray import RayOptions, run_ray

    options = RayOptions(num_gpus=args.num_gpus, num_cpus=args.num_cpus, num_replicas=args.replicas,
                         min_replicas=args.min_replicas, max_replicas=args.max_replicas,
                         target_ongoing_requests=args.target_ongoing_requests,
                         max_ongoing_requests=args.max_ongoing_requests, address=args.ray_address)
    return run_ray(engine_config, server_config, options, args.host, args.port, announce=announce)


def _devices(args: argparse.Namespace) -> list[str] | None:
    """``--devices``, or ``--device`` with ``--replicas-per-device``; ``None``: one engine in the server's
    process."""
    from baton.cluster.router import parse_devices
    from baton.device import resolve_device

    if args.devices is None:  # "auto" resolved here: a CPU device gets its own default of threads
        return [str(resolve_device(args.device))] if args.replicas_per_device != 1 else None
    if args.device != EngineConfig.__dataclass_fields__["device"].default:
        raise ValueError(f"`--devices` replaces `--device`; give one of them, got --device {args.device!r} and "
                         f"--devices {args.devices!r}")
    return parse_devices(args.devices)

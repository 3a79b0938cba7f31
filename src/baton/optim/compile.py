"""Static shapes for the denoiser: ``torch.compile`` and CUDA graphs over shape buckets, warmed up at start.

A compiled model recompiles for every new input shape (35 to 90 s each for a tiny UNet on a CPU), and a CUDA graph
exists only for the shapes it was captured with. A serving engine sees a new row count at almost every step, so
:class:`StaticShapeDenoiser` pads the rows up to the next bucket (1, 2, 4, 6, 8, 12, 16 by default), and warms every
bucket at every configured size at start-up. A size is keyed by the latents' shape as the denoiser takes them
(``[C, h, w]`` for a UNet or SD3, ``[tokens, 4C]`` for Flux's packed latents), so sizes of one token count share
a compiled graph; their position ids are inputs like the rest. Padding rows repeat the last real row and are
dropped from the output; every row of the denoiser is computed independently, so real rows do not depend on
them. A forward outside the buckets (more rows than the largest bucket, or a size not configured) runs the
eager model, logged once per shape: slower, but never a stall for a compile in the middle of serving.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from baton.models.types import Conditioning, Denoiser

logger = logging.getLogger(__name__)

DenoiserInputs = tuple[torch.Tensor, torch.Tensor, Conditioning]
LatentShape = tuple[int, ...]
ExampleInputs = Callable[[int, LatentShape], DenoiserInputs]
"""(bucket rows, one image's latent shape) → denoiser inputs of that shape, for warm-up and capture."""


def use_compile_cache(cache_dir: str | None) -> Path:
    """Point inductor's persistent cache at ``cache_dir`` (or a ``$TORCHINDUCTOR_CACHE_DIR`` the user set, else
    ``~/.cache/baton/inductor``), so a restart reuses the compiled kernels and graphs instead of compiling again."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if cache_dir is None:
        # inductor writes its own default (under /tmp, lost on reboot) into the variable the first time it looks
        user_set = current is not None and os.path.abspath(current) != os.path.abspath(default_cache_dir())
        cache_dir = current if user_set else str(Path.home() / ".cache" / "baton" / "inductor")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache_dir
    path = Path(cache_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def allow_recompiles(shapes: int) -> None:
    """Dynamo gives up on a function after 8 compiled shapes and runs it eagerly; every bucket must fit. Models of
    one architecture share a code object, hence one budget: each compiled model adds its shapes."""
    import torch._dynamo.config as dynamo_config

    dynamo_config.recompile_limit += shapes
    dynamo_config.accumulated_recompile_limit += 4 * shapes


def compiled_denoiser(
    module: torch.nn.Module, call: Callable[..., torch.Tensor], mode: str, fullgraph: bool
) -> Denoiser:
    """The denoiser ``module`` compiled for static shapes, called through ``call(module, latents, timesteps,
    conditioning)`` as the eager one is (``ModelRunner.call_denoiser``)."""
    compiled = torch.compile(module, mode=None if mode == "default" else mode, fullgraph=fullgraph, dynamic=False)
    # (no mode captures CUDA graphs: OptimizationConfig.cuda_graphs does, so outputs are never reused buffers)

    def forward(latents, timesteps, conditioning):
        return call(compiled, latents, timesteps, conditioning)

    return forward


class StaticShapeDenoiser:
    """Runs ``forward`` (compiled, or eager to be captured) on inputs padded to a shape bucket; eager outside."""

    def __init__(
        self,
        forward: Denoiser,
        eager: Denoiser,
        buckets: tuple[int, ...],
        latent_shapes: list[LatentShape],
        cuda_graphs: bool,
    ) -> None:
        self.forward = forward
        self.eager = eager
        self.buckets = tuple(sorted(buckets))
        self.latent_shapes = list(dict.fromkeys(latent_shapes))
        self.cuda_graphs = cuda_graphs
        self._graphs: dict[tuple[int, LatentShape], _GraphedForward] = {}
        self._pool = None
        self._eager_shapes: set[tuple[int, LatentShape]] = set()
        self.eager_calls = 0
        self.bucketed_calls = 0

    def bucket_for(self, rows: int) -> int | None:
        return next((bucket for bucket in self.buckets if bucket >= rows), None)

    def __call__(self, latents, timesteps, conditioning: Conditioning) -> torch.Tensor:
        rows, shape = latents.shape[0], tuple(latents.shape[1:])
        bucket = self.bucket_for(rows)
        if bucket is None or shape not in self.latent_shapes:
            if (rows, shape) not in self._eager_shapes:
                self._eager_shapes.add((rows, shape))
                logger.warning(
                    "denoiser shape %d rows x %s latents is outside the static buckets %s x %s; it runs eagerly",
                    rows, shape, self.buckets, self.latent_shapes,
                )
            self.eager_calls += 1
            return self.eager(latents, timesteps, conditioning)
        self.bucketed_calls += 1
        inputs = _pad_rows((latents, _float_timesteps(timesteps), conditioning), bucket)
        if self.cuda_graphs:
            return self._graphs[(bucket, shape)](*inputs)[:rows]
        return self.forward(*inputs)[:rows]

    def warm_up(self, example: ExampleInputs, show_progress: bool = True) -> float:
        """Run (and so compile) every bucket at every size, then capture the CUDA graphs; returns the seconds."""
        from tqdm.auto import tqdm

        start = time.perf_counter()
        on_cuda = False
        shapes = [(bucket, shape) for shape in self.latent_shapes for bucket in reversed(self.buckets)]
        what = "capturing CUDA graphs" if self.cuda_graphs else "compiling the denoiser"
        with torch.inference_mode(), tqdm(shapes, desc=what, unit="shape", disable=not show_progress) as bar:
            for bucket, shape in bar:
                bar.set_postfix_str(f"{bucket} rows, latents {'x'.join(map(str, shape))}")
                latents, timesteps, conditioning = example(bucket, shape)
                inputs = (latents, _float_timesteps(timesteps), conditioning)
                on_cuda = inputs[0].is_cuda
                if self.cuda_graphs:  # largest first, so the smaller graphs reuse the pool's memory
                    if self._pool is None:
                        self._pool = torch.cuda.graph_pool_handle()
                    self._graphs[(bucket, shape)] = _GraphedForward(self.forward, inputs, self._pool)
                else:
                    self.forward(*inputs)
        if on_cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start


class _GraphedForward:
    """One captured denoiser forward: copy inputs into static buffers, replay, copy the output out."""

    def __init__(self, forward: Denoiser, inputs: DenoiserInputs, pool) -> None:
        latents, timesteps, conditioning = inputs
        static_conditioning = conditioning.map_rows(torch.clone)
        static_conditioning.shared = {name: tensor.clone() for name, tensor in conditioning.shared.items()}
        self.static = (latents.clone(), timesteps.clone(), static_conditioning)
        side = torch.cuda.Stream(latents.device)
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up outside capture: lazy inits, cuBLAS handles, autotuning
            for _ in range(2):
                forward(*self.static)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool):
            self.output = forward(*self.static)

    def __call__(self, latents, timesteps, conditioning: Conditioning) -> torch.Tensor:
        static_latents, static_timesteps, static = self.static
        static_latents.copy_(latents)
        static_timesteps.copy_(timesteps)
        for target, source in zip(static.tensors(), conditioning.tensors(), strict=True):
            target.copy_(source)
        self.graph.replay()
        # the next replay overwrites the output buffer, and schedulers may keep what they are given
        return self.output.clone()


def _float_timesteps(timesteps: torch.Tensor) -> torch.Tensor:
    """One timestep dtype for every sampler (PNDM's are int64, Euler's float32), so one graph serves all; the UNet
    turns them into float32 first thing, so the cast changes nothing. (Flux's are already in the model's dtype.)"""
    return timesteps if timesteps.is_floating_point() else timesteps.to(torch.float32)


def _pad_rows(inputs: DenoiserInputs, rows: int) -> DenoiserInputs:
    """The inputs with ``rows`` rows, contiguous: a compiled graph guards on strides, and one request's rows may be
    a broadcast view (stride 0) where a batch's are a concatenation."""
    latents, timesteps, conditioning = inputs
    if latents.shape[0] == rows:
        return latents.contiguous(), timesteps.contiguous(), conditioning.map_rows(torch.Tensor.contiguous)
    return _pad(latents, rows), _pad(timesteps, rows), conditioning.map_rows(lambda tensor: _pad(tensor, rows))


def _pad(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    missing = rows - tensor.shape[0]
    return torch.cat([tensor, tensor[-1:].expand(missing, *tensor.shape[1:])])


class ShapeGatedDecoder(torch.nn.Module):
    """The VAE decoder, compiled for the shapes warmed at start; any other shape runs the eager decoder."""

    def __init__(self, decoder: torch.nn.Module, mode: str, fullgraph: bool) -> None:
        super().__init__()
        self.eager = decoder
        self.compiled = torch.compile(decoder, mode=None if mode == "default" else mode, fullgraph=fullgraph,
                                      dynamic=False)
        self.warmed: set[tuple[tuple[int, ...], tuple[int, ...]]] = set()  # (shape, strides)
        self._warming = False
        self.eager_calls = 0

    def forward(self, sample: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        layout = (tuple(sample.shape), tuple(sample.stride()))
        if self._warming:
            self.warmed.add(layout)
        if layout in self.warmed:
            return self.compiled(sample, *args, **kwargs)
        self.eager_calls += 1
        return self.eager(sample, *args, **kwargs)

    @contextlib.contextmanager
    def warming(self) -> Iterator[None]:
        """Decodes inside this block compile, and their input layouts are served compiled from then on."""
        self._warming = True
        try:
            yield
        finally:
            self._warming = False

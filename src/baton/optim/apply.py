"""The one place where optimizations are checked against the device and applied to a loaded model.

:func:`check_optimizations` refuses, before any model is loaded, every option that cannot apply on the device or
in the engine's mode, with an error that names the option and says why. :func:`apply_optimizations` then applies
them to each runner in a fixed order (precision, VAE, attention, layout, memory savers, prompt cache, offload,
static shapes) and returns what it built (:class:`baton.models.types.Optimized`), with one line per change, which
the engine logs at start-up and reports in ``describe()``. Options that cannot apply to a model's family (classic
attention on a diffusion transformer's joint attention) are refused with the reason; options that have nothing to
act on in it (channels_last on a model without convolutions) say so in their line.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from typing import TYPE_CHECKING

import torch

from baton.config import EngineConfig, OptimizationConfig
from baton.device import resolve_dtype
from baton.models.builtin import quiet_casts
from baton.models.types import Optimized, PromptInput
from baton.optim.attention import check_attention, fuse_qkv, sdpa_backends, set_attention
from baton.optim.compile import (
    ShapeGatedDecoder,
    StaticShapeDenoiser,
    allow_recompiles,
    compiled_denoiser,
    use_compile_cache,
)
from baton.optim.memory import ModelOffload, sequential_offload, vae_slicing_and_tiling
from baton.optim.precision import component_dtype, set_text_encoder_dtype, set_vae_dtype
from baton.optim.prompt_cache import PromptCache
from baton.optim.vae import BUILTIN_VAES, TINY_VAE_SUBFOLDER, check_vae_fits, load_vae, resolve_vae_name
from baton.request import GenerationRequest

if TYPE_CHECKING:
    from baton.models.runner import ModelRunner

logger = logging.getLogger(__name__)

_STAGED_ONLY = "applies to the staged engine; stacked mode is the plain diffusers pipeline, the baseline"


def check_optimizations(config: EngineConfig, device: torch.device) -> None:
    """Raise ``ValueError`` for any option the device or the mode cannot honour (nothing falls back silently)."""
    opts = config.optimizations
    cuda = device.type == "cuda"
    check_attention(opts.attention, device)
    engine_dtype = torch.float32  # only the names are checked here; the engine's dtype is checked by the engine
    component_dtype("text_encoder_dtype", opts.text_encoder_dtype, engine_dtype, device)
    component_dtype("vae_dtype", opts.vae_dtype, engine_dtype, device)
    if not cuda:
        where = f"the device is {device}"
        if opts.cuda_graphs:
            raise ValueError(f"`cuda_graphs` needs a CUDA device; {where}")
        if opts.offload != "none":
            raise ValueError(f"`offload` {opts.offload!r} moves models off a GPU and needs a CUDA device; {where}, "
                             "where the models are in host memory already")
        if opts.prompt_cache.text_encoders_on_cpu:
            raise ValueError(f"`prompt_cache.text_encoders_on_cpu` needs a CUDA device; {where}, where the text "
                             "encoders are on the CPU already")
    if cuda and opts.attention in ("flash", "cudnn") and resolve_dtype(config.dtype, device) == torch.float32:
        raise ValueError(f"`attention` {opts.attention!r} has no float32 kernel on CUDA; use `dtype` 'float16' or "
                         "'bfloat16', or `attention` 'sdpa' / 'efficient' / 'math'")
    if opts.cuda_graphs and not opts.compile.warmup:
        raise ValueError("`cuda_graphs` needs `compile.warmup` (graphs are captured at start-up, while nothing else "
                         "runs on the device)")
    if config.mode == "stacked":
        staged_only = {
            "compile.enabled": opts.compile.enabled,
            "cuda_graphs": opts.cuda_graphs,
            "prompt_cache.max_bytes": opts.prompt_cache.max_bytes > 0,
            "offload": opts.offload == "model",
            "text_encoder_dtype": opts.text_encoder_dtype != "auto",
            "vae_dtype": opts.vae_dtype != "auto",
            "attention": opts.attention not in ("sdpa", "classic"),  # a kernel choice covers the denoiser only
        }
        for field, asked in staged_only.items():
            if asked:
                raise ValueError(f"`{field}` {_STAGED_ONLY}")


def apply_optimizations(runner: ModelRunner, config: EngineConfig, show_progress: bool = False) -> Optimized:
    """Apply ``config.optimizations`` to ``runner`` (call :func:`check_optimizations` first); returns what it built.

    The result is the runner's ``optimized`` from the start, so that the prompt cache's precompute and the
    static-shape warm-up below run exactly as serving will."""
    opts = config.optimizations
    device = runner.device
    pipeline = runner.pipeline
    denoiser = runner.denoiser_module
    built = runner.optimized = Optimized()
    applied = built.lines

    # 1. precision per component
    applied.append(f"denoiser in {str(runner.dtype).removeprefix('torch.')}")
    text_dtype = component_dtype("text_encoder_dtype", opts.text_encoder_dtype, runner.dtype, device)
    _add(applied, set_text_encoder_dtype(runner, text_dtype))
    if opts.vae is not None:  # 2. a replacement VAE (the tiny autoencoder, or an fp16-safe one)
        vae_name = resolve_vae_name(opts.vae, runner.tiny_vae, runner.source)
        vae = load_vae(vae_name, device, torch.float32, runner.vae_scale_factor)
        check_vae_fits(vae, runner.latent_channels, runner.vae_scale_factor, vae_name)
        if vae_name in BUILTIN_VAES and runner.source is not None:
            logger.warning("`vae` %r has random weights, but model %r has trained ones: its images will be noise. "
                           "For quality as well as speed, give a folder or hub id with a tiny autoencoder trained "
                           "for this model (%s), or put one in the model folder's %s/", opts.vae, runner.name,
                           f"madebyollin/{runner.tiny_vae} for {runner.family}",
                           TINY_VAE_SUBFOLDER)
        vae_dtype = component_dtype("vae_dtype", opts.vae_dtype, runner.dtype, device)
        if opts.vae_dtype == "auto" and vae_dtype == torch.float16 and getattr(vae.config, "force_upcast", False):
            vae_dtype = torch.float32  # as for the model's own VAE: this one says it overflows in float16
        with quiet_casts():
            vae.to(dtype=vae_dtype)
        runner.vae = vae
        pipeline.register_modules(vae=vae)  # the stacked baseline decodes with it too
        weights = ", random weights" if vae_name in BUILTIN_VAES else ""
        applied.append(f"vae replaced by {vae_name} ({type(vae).__name__}, {str(vae.dtype).removeprefix('torch.')}"
                       f"{weights})")
    elif opts.vae_dtype != "auto":
        _add(applied, set_vae_dtype(runner, component_dtype("vae_dtype", opts.vae_dtype, runner.dtype, device)))
    elif runner.vae is not pipeline.vae:
        applied.append("vae in float32 (it overflows in float16: force_upcast)")
    vaes = [runner.vae] + ([pipeline.vae] if pipeline.vae is not runner.vae else [])

    # 3. attention
    applied.append(set_attention([denoiser, *vaes], opts.attention))
    built.attention_backends = sdpa_backends(opts.attention)
    if opts.fuse_qkv:
        applied.append(fuse_qkv(denoiser))

    # 4. memory layout and memory savers
    if opts.channels_last:
        convolutional = _mostly_convolutional(denoiser)
        for module in ((denoiser, *vaes) if convolutional else vaes):
            module.to(memory_format=torch.channels_last)
        applied.append("channels_last memory format (denoiser, vae)" if convolutional else
                       "channels_last memory format (vae; the denoiser is a transformer, with no convolutions to "
                       "lay out)")
    for vae in vaes:  # the same lines for each: report them once
        saver_lines = vae_slicing_and_tiling(vae, opts.vae_slicing, opts.vae_tiling)
    applied.extend(saver_lines)

    # 5. the prompt cache, filled with the precomputed prompts; then the text encoders may leave the device
    cache = opts.prompt_cache
    if cache.max_bytes > 0:
        built.prompt_cache = PromptCache(cache.max_bytes)
        if cache.precompute:
            with torch.inference_mode():
                runner.encode([PromptInput(prompt, None, True) for prompt in cache.precompute])
        applied.append(f"prompt cache: {cache.max_bytes / 2**20:.0f} MiB, {len(cache.precompute)} prompts "
                       "precomputed")
        if cache.text_encoders_on_cpu:
            for encoder in runner.text_encoders():
                encoder.to("cpu", torch.float32)
            built.text_device = torch.device("cpu")
            applied.append("text encoders in host memory (float32); cache misses encode on the CPU")

    # 6. offload
    if opts.offload == "model":
        components = {"text": runner.text_encoders(), "denoiser": [denoiser], "vae": [runner.vae]}
        if cache.text_encoders_on_cpu:
            components["text"] = []  # they live on the CPU for good
        # the pipeline's own VAE, when a copy decodes, only serves stacked mode, which model offload excludes
        parked = [pipeline.vae] if pipeline.vae is not runner.vae else []
        built.offload = ModelOffload(components, device, parked=parked)
        applied.append("model CPU offload: one component on the device at a time")
    elif opts.offload == "sequential":
        modules = [denoiser, *vaes] + ([] if cache.text_encoders_on_cpu else runner.text_encoders())
        sequential_offload(modules, device)
        applied.append("sequential CPU offload: weights stream to the device layer by layer")

    # 7. static shapes: compile and CUDA graphs over buckets, warmed up now
    if opts.static_shapes:
        applied.extend(_static_shapes(runner, config, show_progress))
    return built


def _static_shapes(runner: ModelRunner, config: EngineConfig, show_progress: bool) -> list[str]:
    opts: OptimizationConfig = config.optimizations
    compile_config = opts.compile
    sizes = compile_config.sizes or ((runner.default_size, runner.default_size),)
    latent_shapes = [runner.latent_shape(height, width) for width, height in sizes]
    lines = []
    runner.remove_batch_invariance()
    forward = runner.eager_denoiser
    if compile_config.enabled:
        cache_dir = use_compile_cache(compile_config.cache_dir)
        allow_recompiles(len(compile_config.batch_buckets) * len(sizes))
        forward = compiled_denoiser(runner.denoiser_module, runner.call_denoiser, compile_config.mode,
                                    compile_config.fullgraph)
        lines.append(f"torch.compile of the denoiser (mode {compile_config.mode}, fullgraph "
                     f"{compile_config.fullgraph}; cache {cache_dir})")
    denoiser = StaticShapeDenoiser(forward, runner.eager_denoiser, compile_config.batch_buckets, latent_shapes,
                                   cuda_graphs=opts.cuda_graphs)
    runner.optimized.denoiser = denoiser
    if opts.cuda_graphs:
        lines.append("CUDA graphs of the denoiser, one per shape bucket")
    lines.append(f"static shapes: rows padded to {list(compile_config.batch_buckets)}, sizes "
                 f"{[f'{w}x{h}' for w, h in sizes]}; other shapes run eagerly")
    decoder = None
    if compile_config.enabled and compile_config.vae:
        decoder = ShapeGatedDecoder(runner.vae.decoder, compile_config.mode, compile_config.fullgraph)
        runner.vae.decoder = decoder
        lines.append("torch.compile of the VAE decoder")
    if compile_config.warmup:
        start = time.perf_counter()
        example = _example_inputs(runner, dict(zip(latent_shapes, sizes)))
        on_device = torch.cuda.device(runner.device) if runner.device.type == "cuda" else contextlib.nullcontext()
        # under the same attention restriction as serving: dynamo does not guard on the SDPA backend
        with on_device, runner.running("denoiser"):
            denoiser.warm_up(example, show_progress)
        if decoder is not None:
            batches = [1] if opts.vae_slicing else range(1, config.decode.max_batch_images + 1)
            with on_device, torch.inference_mode(), decoder.warming():
                for (width, height), batch in itertools.product(sizes, batches):
                    # through the real decode path, so the decoder sees serving's strides (channels_last)
                    runner.decode(torch.zeros(batch, *runner.latent_shape(height, width), device=runner.device,
                                              dtype=runner.dtype), height, width)
        warmup_s = runner.optimized.warmup_s = round(time.perf_counter() - start, 2)
        lines.append(f"warm-up: {len(latent_shapes) * len(compile_config.batch_buckets)} shapes in {warmup_s:.1f} s")
    return lines


def _example_inputs(runner: ModelRunner, sizes: dict[tuple[int, ...], tuple[int, int]]):
    """Denoiser inputs of any bucket and latent shape, built through the runner's own request path from a real
    (empty) prompt, so their dtypes and strides are serving's."""
    with torch.inference_mode():
        [embeddings] = runner.encode([PromptInput("", None, True)])

    def example(rows: int, shape: tuple[int, ...]):
        width, height = sizes[shape]
        request = GenerationRequest(prompt="", width=width, height=height, guidance_scale=7.5, seed=0)
        state = runner.start(request, embeddings, seed=0)
        latents, timesteps = runner.model_inputs(state)
        conditioning = state.conditioning.map_rows(lambda t: t[:1].expand(rows, *t.shape[1:]).contiguous())
        latents = latents[:1].expand(rows, *latents.shape[1:]).contiguous()
        return latents, timesteps[:1].expand(rows).contiguous(), conditioning

    return example


def _mostly_convolutional(module: torch.nn.Module) -> bool:
    """A UNet, not a transformer whose only convolution embeds patches (SD3's): memory layout matters to it."""
    convolution = sum(p.numel() for layer in module.modules() if isinstance(layer, torch.nn.Conv2d)
                      for p in layer.parameters())
    return convolution > 0.05 * sum(p.numel() for p in module.parameters())


def _add(lines: list[str], line: str | None) -> None:
    if line is not None:
        lines.append(line)

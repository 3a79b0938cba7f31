"""Engine configuration: plain dataclasses, validated on construction, no torch.

Each field says what it controls. Invalid values raise ``ValueError`` naming the field and the value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

EngineMode = Literal["staged", "stacked"]
DTypeName = Literal["auto", "float32", "float16", "bfloat16"]
DenoiseBatching = Literal["step", "request"]
AttentionName = Literal["sdpa", "flash", "efficient", "cudnn", "math", "classic"]
CompileMode = Literal["default", "max-autotune-no-cudagraphs"]
OffloadName = Literal["none", "model", "sequential"]

ENGINE_MODES: tuple[str, ...] = ("staged", "stacked")
DENOISE_BATCHING: tuple[str, ...] = ("step", "request")
DTYPE_NAMES: tuple[str, ...] = ("auto", "float32", "float16", "bfloat16")
ATTENTION_NAMES: tuple[str, ...] = ("sdpa", "flash", "efficient", "cudnn", "math", "classic")
COMPILE_MODES: tuple[str, ...] = ("default", "max-autotune-no-cudagraphs")
OFFLOAD_NAMES: tuple[str, ...] = ("none", "model", "sequential")


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """What a single request may ask for. Requests outside these limits are refused before any model work."""

    min_size: int = 64
    """Smallest allowed width or height, in pixels."""
    max_size: int | None = None
    """Largest allowed width or height, in pixels, for every model. ``None``: each model's own limit, from
    :attr:`model_max_size`, else its folder's ``baton.json``, else twice its native side (shapes 128, SD1.5 1024,
    SDXL 2048). Compute grows with the square of the side (and attention faster), so one oversized request can
    hold the denoiser for minutes: the limit should fit the model, not the largest model anyone serves."""
    model_max_size: tuple[tuple[str, int], ...] = ()
    """Per-model limits that win over everything else: ``(("shapes", 256), ("tiny-sd15", 512))``."""
    size_multiple: int = 8
    """Width and height must be multiples of this (the VAE downsamples by 8)."""
    max_steps: int = 200
    """Largest number of denoising steps."""
    max_images: int = 16
    """Largest number of images per request."""
    max_priority: int = 100
    """Priorities must lie between ``-max_priority`` and ``max_priority``."""

    def __post_init__(self) -> None:
        _require(self.size_multiple >= 1, "size_multiple", self.size_multiple, "must be >= 1")
        _require(self.min_size >= self.size_multiple, "min_size", self.min_size, "must be >= size_multiple")
        _require(self.max_size is None or self.max_size >= self.min_size, "max_size", self.max_size,
                 f"must be None or >= min_size ({self.min_size})")
        _require(self.max_steps >= 1, "max_steps", self.max_steps, "must be >= 1")
        _require(self.max_images >= 1, "max_images", self.max_images, "must be >= 1")
        _require(self.max_priority >= 0, "max_priority", self.max_priority, "must be >= 0")
        object.__setattr__(self, "model_max_size", tuple(tuple(pair) for pair in self.model_max_size))
        for model, side in self.model_max_size:
            _require(isinstance(model, str) and model and isinstance(side, int) and side >= self.min_size,
                     "model_max_size", (model, side), f"must pair a model name with a size >= {self.min_size}")

    def max_size_for(self, model: str, native_size: int, folder_max_size: int | None = None) -> int:
        """The largest side a request to ``model`` may ask for (see :attr:`max_size`)."""
        by_model = dict(self.model_max_size)
        if model in by_model:
            return by_model[model]
        if self.max_size is not None:
            return self.max_size
        if folder_max_size is not None:
            return folder_max_size
        return max(self.min_size, 2 * native_size)


@dataclass(frozen=True, slots=True)
class StageConfig:
    """How one pipeline stage forms batches."""

    max_batch_images: int = 8
    """Most images a batch of this stage may hold. A single larger request still runs, alone."""
    max_wait_s: float = 0.0
    """How long the stage may hold a partial batch waiting for more compatible requests.

    0 runs whatever is waiting at once: under load, batches fill from the queue that builds up while the stage
    works, and at low load nobody pays for waiting."""

    cpu_threads: int | None = None
    """On a CPU, intra-op threads of this stage's worker; ``None`` keeps torch's default (one per core).

    Only the denoiser should be multi-threaded: every thread that runs parallel torch ops gets its own OpenMP
    team, and once teams outnumber the cores, OpenMP stops spinning between parallel regions and every op pays a
    wake-up (measured here: a tiny UNet forward went from 7 ms to 24-33 ms). Ignored on CUDA."""

    def __post_init__(self) -> None:
        _require(self.max_batch_images >= 1, "max_batch_images", self.max_batch_images, "must be >= 1")
        _require(self.cpu_threads is None or self.cpu_threads >= 1, "cpu_threads", self.cpu_threads,
                 "must be None or >= 1")
        _require(self.max_wait_s >= 0, "max_wait_s", self.max_wait_s, "must be >= 0")


@dataclass(frozen=True, slots=True)
class DenoiseConfig:
    """How the denoiser shares its forwards between requests (see ``baton.scheduling.StepPolicy``)."""

    batching: DenoiseBatching = "step"
    """``step``: requests join and leave the running batch between denoising steps (continuous batching).
    ``request``: a batch forms, runs until all its requests are done, and only then does the next one form
    (requests that finish early still leave at once)."""
    max_rows: int = 16
    """Most denoiser rows per forward. An image with classifier-free guidance takes two rows (unconditional and
    conditional), one without. A single larger request still runs, alone."""
    max_wait_s: float = 0.0
    """How long an idle denoiser may hold a partial batch waiting for more requests. With step batching, late
    requests join the running batch anyway, so 0 (start at once) is right; request batching may want a little."""
    priority_aging_s: float = 1.0
    """What one priority level is worth in waiting time: a request of priority ``p`` ranks as if it had arrived
    ``p * priority_aging_s`` seconds earlier. A lower priority is thus delayed by a bounded time, never starved
    by a stream of higher-priority requests."""
    cpu_threads: int | None = None
    """On a CPU, intra-op threads of the denoiser's worker; ``None`` keeps torch's default (see
    :attr:`StageConfig.cpu_threads`)."""

    def __post_init__(self) -> None:
        _require(self.batching in DENOISE_BATCHING, "batching", self.batching, f"must be one of {DENOISE_BATCHING}")
        _require(self.max_rows >= 1, "max_rows", self.max_rows, "must be >= 1")
        _require(self.max_wait_s >= 0, "max_wait_s", self.max_wait_s, "must be >= 0")
        _require(self.priority_aging_s > 0, "priority_aging_s", self.priority_aging_s, "must be > 0")
        _require(self.cpu_threads is None or self.cpu_threads >= 1, "cpu_threads", self.cpu_threads,
                 "must be None or >= 1")


@dataclass(frozen=True, slots=True)
class CompileConfig:
    """``torch.compile`` of the denoiser (and optionally the VAE decoder) over static shape buckets.

    A serving engine must never recompile after warm-up: the denoiser's rows are padded up to the next bucket of
    :attr:`batch_buckets`, each bucket is compiled once per size of :attr:`sizes` at start-up, and a forward
    whose rows or size fall outside them runs the eager model (logged once per shape) instead of compiling."""

    enabled: bool = False
    """Compile the denoiser."""
    mode: CompileMode = "default"
    """``torch.compile`` mode. The modes that capture CUDA graphs inside inductor (``reduce-overhead``,
    ``max-autotune``) are not offered: inductor keeps those graphs per thread, so graphs recorded at warm-up would
    be recorded again on the denoiser's thread while serving. Use :attr:`OptimizationConfig.cuda_graphs` instead
    (baton's own capture per bucket, replayable from any thread)."""
    fullgraph: bool = False
    """Fail instead of falling back to eager for parts dynamo cannot trace."""
    vae: bool = False
    """Also compile the VAE decoder (one compile per decode batch size and image size that occurs)."""
    batch_buckets: tuple[int, ...] = (1, 2, 4, 6, 8, 12, 16)
    """Denoiser row counts compiled; a forward with ``r`` rows runs in the smallest bucket ``>= r``.

    Finer than powers of two, so that 10 rows (5 guided images) run as 12, not 16: at most a quarter of a forward
    is padding from 4 rows up. Each bucket costs one compile at start-up; CUDA graphs of all buckets share one
    memory pool, sized by the largest (captured first), so a smaller bucket adds only its static input and
    output buffers (docs/optimizations.md has the numbers)."""
    sizes: tuple[tuple[int, int], ...] = ()
    """Image sizes (width, height) compiled; empty: the model's native size only."""
    cache_dir: str | None = None
    """Persistent compile cache (``TORCHINDUCTOR_CACHE_DIR``) so a restart is ready in seconds. ``None``:
    ``$TORCHINDUCTOR_CACHE_DIR`` when set, else ``~/.cache/baton/inductor``."""
    warmup: bool = True
    """Compile every bucket at start-up (with a progress bar), so no request pays for a compile."""

    def __post_init__(self) -> None:
        _require(self.mode in COMPILE_MODES, "compile.mode", self.mode, f"must be one of {COMPILE_MODES}")
        buckets = tuple(self.batch_buckets)
        _require(len(buckets) >= 1 and all(isinstance(b, int) and b >= 1 for b in buckets), "compile.batch_buckets",
                 self.batch_buckets, "must be positive integers")
        object.__setattr__(self, "batch_buckets", tuple(sorted(set(buckets))))
        sizes = tuple(tuple(size) for size in self.sizes)
        _require(all(len(size) == 2 and min(size) >= 8 for size in sizes), "compile.sizes", self.sizes,
                 "must be (width, height) pairs")
        object.__setattr__(self, "sizes", sizes)
        _require(not self.vae or self.enabled, "compile.vae", self.vae, "needs `compile.enabled`")
        _require(not self.vae or self.warmup, "compile.vae", self.vae,
                 "needs `compile.warmup` (the decoder runs compiled only for the shapes warmed at start-up)")


@dataclass(frozen=True, slots=True)
class PromptCacheConfig:
    """An LRU cache of prompt embeddings per model, bounded in bytes (see ``baton.optim.prompt_cache``)."""

    max_bytes: int = 0
    """Device memory the cached embeddings may take; 0 turns the cache off. An SD1.5 prompt with its negative
    takes 236 KB in float16, an SDXL one 632 KB."""
    precompute: tuple[str, ...] = ()
    """Prompts encoded at start-up (with the empty negative prompt), e.g. a service's fixed style prompts."""
    text_encoders_on_cpu: bool = False
    """Keep the text encoders in host memory, in float32 (whatever ``text_encoder_dtype`` says), once
    :attr:`precompute` is cached: device memory is freed, and a prompt missing from the cache is encoded on the
    CPU. CUDA only (on a CPU they are there already)."""

    def __post_init__(self) -> None:
        _require(self.max_bytes >= 0, "prompt_cache.max_bytes", self.max_bytes, "must be >= 0")
        object.__setattr__(self, "precompute", tuple(self.precompute))
        _require(not self.precompute or self.max_bytes > 0, "prompt_cache.precompute", self.precompute,
                 "needs a cache: set `prompt_cache.max_bytes` > 0")
        _require(not self.text_encoders_on_cpu or self.max_bytes > 0, "prompt_cache.text_encoders_on_cpu",
                 self.text_encoders_on_cpu, "needs a cache: set `prompt_cache.max_bytes` > 0")


@dataclass(frozen=True, slots=True)
class OptimizationConfig:
    """The optimization toolbox, applied to every model in one place (``baton.optim.apply``) and logged at start.

    Options that cannot apply on the engine's device are refused with an error that says why; none is dropped
    silently. Presets (``baton.optim.presets``) are named sets of these fields."""

    preset: str | None = None
    """The preset these options came from (informational: ``describe()`` reports it)."""
    attention: AttentionName = "sdpa"
    """``sdpa``: PyTorch's scaled-dot-product attention, backend chosen by PyTorch. ``flash``, ``efficient``,
    ``cudnn``, ``math``: the denoiser's SDPA restricted to that backend (``efficient`` and ``cudnn`` need CUDA;
    ``flash`` on CUDA needs float16 or bfloat16). The text encoders and the VAE keep PyTorch's choice. ``classic``:
    diffusers' pre-SDPA attention processor that materializes the attention matrix (the unoptimized baseline)."""
    text_encoder_dtype: DTypeName = "auto"
    """Precision of the text encoder(s); ``auto``: the engine's ``dtype``."""
    vae_dtype: DTypeName = "auto"
    """Precision of the VAE; ``auto``: the engine's ``dtype``, except float32 when that is float16 and the VAE
    says it overflows in float16 (``force_upcast``, SDXL's VAE): a float32 copy is kept for decoding."""
    channels_last: bool = False
    """Denoiser and VAE weights and activations in the channels-last memory format (faster convolutions on
    tensor cores)."""
    fuse_qkv: bool = False
    """Fuse each self-attention's query, key and value projections into one GEMM (not with ``classic``)."""
    compile: CompileConfig = field(default_factory=CompileConfig)
    """``torch.compile`` with static shape buckets."""
    cuda_graphs: bool = False
    """Capture the denoiser in a CUDA graph per shape bucket (``compile.batch_buckets`` x ``compile.sizes``) and
    replay it: one launch per forward instead of hundreds. CUDA only."""
    offload: OffloadName = "none"
    """``model``: each model (text encoders, denoiser, VAE) lives in host memory and moves to the GPU while it
    runs. ``sequential``: weights move layer by layer (least memory, slowest). CUDA only; runs the stages on one
    thread (fused stages)."""
    vae_slicing: bool = False
    """Decode a batch one image at a time (lower peak memory for multi-image batches)."""
    vae_tiling: bool = False
    """Decode large images in overlapping tiles (lower peak memory at large sizes; may show faint seams)."""
    vae: str | None = None
    """Replace the model's VAE for decoding: ``taesd`` / ``taesdxl`` (the tiny autoencoder's architectures, random
    weights, for benchmarks), or a folder or hub id holding an ``AutoencoderTiny`` or ``AutoencoderKL`` (e.g. an
    fp16-safe SDXL VAE). Lossy for the tiny autoencoder: it trades detail for a ~10x cheaper decode."""
    prompt_cache: PromptCacheConfig = field(default_factory=PromptCacheConfig)
    """The prompt-embedding cache (off by default)."""

    def __post_init__(self) -> None:
        _require(self.attention in ATTENTION_NAMES, "attention", self.attention, f"must be one of {ATTENTION_NAMES}")
        for name in ("text_encoder_dtype", "vae_dtype"):
            value = getattr(self, name)
            _require(value in DTYPE_NAMES, name, value, f"must be one of {DTYPE_NAMES}")
        _require(self.offload in OFFLOAD_NAMES, "offload", self.offload, f"must be one of {OFFLOAD_NAMES}")
        _require(not (self.fuse_qkv and self.attention == "classic"), "fuse_qkv", self.fuse_qkv,
                 "needs an SDPA attention (the fused processor is SDPA); `attention` is 'classic'")
        _require(not (self.offload != "none" and (self.cuda_graphs or self.compile.enabled)), "offload",
                 self.offload, "cannot be combined with compile or CUDA graphs (they need the weights to stay "
                 "on the device)")

    @property
    def static_shapes(self) -> bool:
        """Whether the denoiser runs over padded shape buckets (compile or CUDA graphs)."""
        return self.compile.enabled or self.cuda_graphs


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Everything that shapes an :class:`~baton.Engine`.

    Example::

        EngineConfig(models=("tiny-sd15",), device="cpu", denoise=DenoiseConfig(max_rows=32))
    """

    models: tuple[str, ...] = ("shapes",)
    """Models to load: built-in names (``baton models``), hub ids or local folders. The first is the default."""
    mode: EngineMode = "staged"
    """``staged``: baton's pipeline of concurrent stages. ``stacked``: the plain diffusers pipeline, one request
    at a time (the baseline every benchmark compares with)."""
    device: str = "auto"
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    dtype: DTypeName = "auto"
    """Compute dtype of the models. ``auto``: float16 on CUDA, float32 on CPU."""
    max_queue: int = 256
    """Requests admitted but not finished, at most; past that, :class:`~baton.QueueFullError`."""
    max_queued_pixel_steps: int | None = None
    """Work admitted but not finished, at most, in pixel-steps (images x width x height x steps, summed over the
    requests); past that, :class:`~baton.QueueFullError`. Requests differ in cost by orders of magnitude, so a
    count alone lets a few large ones queue minutes of work. A request is always admitted into an empty engine.
    ``None``: 128 images at the largest loaded model's native size and 30 steps (SD1.5 1.0e9, SDXL 4.0e9)."""
    stage_queue_size: int = 64
    """Capacity of each queue between stages; a full queue makes the stage before it wait (backpressure)."""
    encode: StageConfig = field(default_factory=lambda: StageConfig(max_batch_images=16, cpu_threads=1))
    """Text-encoding stage batching (counted in prompts)."""
    denoise: DenoiseConfig = field(default_factory=DenoiseConfig)
    """Denoiser scheduling: step-level or request-level batching, rows per forward, priorities."""
    decode: StageConfig = field(default_factory=lambda: StageConfig(max_batch_images=4, cpu_threads=1))
    """VAE-decoding stage batching (counted in images)."""
    fused_stages: bool | None = None
    """Run text encoding and VAE decoding on the denoiser's thread, as requests are admitted and as they finish,
    instead of on their own threads. ``None``: on for a CPU, off for CUDA. On a GPU the stages overlap for real, on
    their own streams. On a CPU they only share the same cores: the single-threaded encoder and decoder (see
    :attr:`StageConfig.cpu_threads`) preempted the denoiser's pool mid-forward, and a request waiting for its
    decode is one a closed-loop client cannot replace in the running batch. Measured on this 2-core CPU
    (tiny-sd15 128x128, 8 clients): 13.0 rows per forward of 16 with both threads; 14.8 decoding on the
    denoiser's thread; per-row forward time 1.71-2.02 ms with an encoder thread, 1.42-1.53 ms without."""
    gil_switch_interval_s: float | None = 0.0005
    """Python's GIL switch interval while the engine runs (``sys.setswitchinterval``; restored by ``close``).
    The denoiser's thread needs the GIL back after every torch op; with the default 5 ms, a client or image
    thread holding it can stall a forward that long. Measured on this 2-core CPU (tiny-sd15 128x128, 8 clients,
    interleaved A/B): 12.8-13.3 images/s at 5 ms, 14.3-14.4 at 0.5 ms. ``None`` leaves the interpreter alone."""
    batch_invariant: bool | None = None
    """Run the denoiser's few batch-sensitive layers per request, so an image never depends on what it was
    batched with (``baton.models.invariance``). ``None``: on for a CPU, off for CUDA (where cuBLAS chooses
    kernels by shape, so it would not guarantee invariance, and fp16 rounding dominates anyway)."""
    optimizations: OptimizationConfig = field(default_factory=OptimizationConfig)
    """Precision, attention, compile, CUDA graphs, memory savers, prompt cache (see :class:`OptimizationConfig`;
    presets: ``baton.optim.presets``)."""
    image_workers: int = 2
    """Threads of the CPU pool that turns pixels into PNG/JPEG/WebP bytes."""
    limits: RequestLimits = field(default_factory=RequestLimits)
    """Per-request limits, checked before any model work."""

    def __post_init__(self) -> None:
        models = (self.models,) if isinstance(self.models, str) else tuple(self.models)
        object.__setattr__(self, "models", models)
        _require(len(models) >= 1, "models", self.models, "must name at least one model")
        _require(all(isinstance(m, str) and m for m in models), "models", self.models, "must be non-empty strings")
        _require(self.mode in ENGINE_MODES, "mode", self.mode, f"must be one of {ENGINE_MODES}")
        _require(self.dtype in DTYPE_NAMES, "dtype", self.dtype, f"must be one of {DTYPE_NAMES}")
        _require(
            self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
            "device",
            self.device,
            "must be 'auto', 'cpu', 'cuda' or 'cuda:N'",
        )
        _require(self.max_queue >= 1, "max_queue", self.max_queue, "must be >= 1")
        _require(self.max_queued_pixel_steps is None or self.max_queued_pixel_steps >= 1, "max_queued_pixel_steps",
                 self.max_queued_pixel_steps, "must be None or >= 1")
        _require(self.stage_queue_size >= 1, "stage_queue_size", self.stage_queue_size, "must be >= 1")
        _require(self.image_workers >= 1, "image_workers", self.image_workers, "must be >= 1")
        _require(self.gil_switch_interval_s is None or self.gil_switch_interval_s > 0, "gil_switch_interval_s",
                 self.gil_switch_interval_s, "must be None or > 0")
        optimizations = self.optimizations
        _require(not (optimizations.offload != "none" and self.fused_stages is False), "fused_stages",
                 self.fused_stages, "must not be False with `offload` (offloading needs one thread to own the models)")
        _require(not (optimizations.static_shapes and self.batch_invariant), "batch_invariant", self.batch_invariant,
                 "cannot be combined with compile or CUDA graphs (the per-request layers would vary the graph)")


def _require(ok: bool, name: str, value: object, rule: str) -> None:
    if not ok:
        raise ValueError(f"`{name}` {rule}, got {value!r}")

"""``baton train-shapes``: train the shapes model from scratch on a CPU (or a GPU), then save it.

1. The VAE learns to reconstruct rendered scenes (L1 + L2 weighted towards the objects, a tiny KL term), for a
   time budget.
2. Latents of a fixed set of training scenes are encoded once; their spread sets the VAE's ``scaling_factor``.
3. The UNet and the text encoder learn to predict v on a zero-terminal-SNR schedule (``baton.shapes.model``
   says why), given a caption built afresh for each sample (``baton.shapes.captions``: attributes left out,
   phrases reordered, synonyms and filler, so typed prompts work; dropped 10% of the time, for classifier-free
   guidance), for a time budget. Three standard tricks make the most of a CPU's few thousand steps: Min-SNR-5
   loss weights (Hang et al. 2023: the nearly clean steps stop dominating) with a floor for the noisiest ones, a
   learning rate that warms up then decays along a cosine over the budget, and an exponential moving average of
   the weights, which is what gets saved.
4. A tiny autoencoder (``AutoencoderTiny``, the TAESD design at this model's 4x upsampling) learns to decode
   the UNet's latents as the VAE does (and to encode images to them): what ``--vae tiny`` and the
   ``max-throughput`` preset decode with. It is saved in the folder's ``vae_tiny``.
5. The prompt accuracy on held-out template captions and on the free-form prompts (``baton.shapes.prompts``) is
   measured with the detector (and, as a check on steps 1 and 4, on reconstructions), and the pipeline is saved
   in float16 safetensors (about 11 MB).

``train_tiny_vae`` runs step 4 alone on a saved folder (``baton train-shapes --tiny-vae-only``). ``resume``
(``--resume DIR``) continues from a saved model instead of starting from scratch, so a longer schedule can run in
pieces: its VAE and tiny autoencoder are kept as they are (steps 1 and 4 are skipped), the UNet and the text
encoder train on from its weights (the text encoder adopts the current vocabulary, carrying its embeddings over
by word), with a fresh warm-up and cosine over the new budget, and the new ``training.json`` keeps the old record
under ``resumed_from``.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, AutoencoderTiny, StableDiffusionPipeline
from diffusers.training_utils import EMAModel

from baton.models.builtin import quiet_casts
from baton.models.registry import SERVING_DEFAULTS_FILE
from baton.optim.vae import TINY_VAE_SUBFOLDER, tiny_vae_architecture, upsampling_factor
from baton.request import DEFAULT_STEPS
from baton.shapes.captions import varied_caption
from baton.shapes.detector import ATTRIBUTES, accuracy
from baton.shapes.model import adopt_tokenizer, build_pipeline, training_scheduler
from baton.shapes.prompts import FREE_FORM_PROMPTS, free_form_accuracy, free_form_subset
from baton.shapes.scenes import caption, render, sample_scenes

logger = logging.getLogger(__name__)

SERVING_GUIDANCE = 2.0
"""The guidance scale the model is evaluated and served with (written to the folder's ``baton.json``). Measured on
an earlier CPU run (SD1.5's schedule, 3-level UNet), 64 held-out prompts: colour/shape/count 100/94/91% at 1.0
(no guidance), 100/89/95% at 2.0, 98/88/95% at 3.0, and 19/19/59% at 4.5: a model this small over-saturates at
SD1.5's 7.5. On the weights that follow typed prompts (``baton bench quality``, 2026-12-01), 2.0 is still best on
the free-form prompts: 88.6% at 1.0, 92.0% at 2.0, 91.7% at 3.0."""
WARMUP_STEPS = 100
MIN_SNR_GAMMA = 5.0
HIGH_NOISE_WEIGHT = 0.25
TINY_VAE_CHANNELS = 32
"""Half the published tiny autoencoder's width: this VAE's own widest level has 64 channels."""


def train_shapes(out_dir: Path, vae_minutes: float = 7.0, unet_minutes: float = 75.0, tiny_vae_minutes: float = 2.0,
                 batch: int = 32, vae_batch: int = 16, latent_scenes: int = 20_000, seed: int = 0,
                 eval_prompts: int = 64, eval_free_form: int = len(FREE_FORM_PROMPTS), device: str | None = None,
                 resume: Path | None = None,
                 log: Callable[[str], None] = logger.info) -> dict:
    """Train, evaluate and save; returns the training record (also written to ``out_dir/training.json``)."""
    _check_budgets(unet_minutes=unet_minutes, **({} if resume else {"vae_minutes": vae_minutes,
                                                                    "tiny_vae_minutes": tiny_vae_minutes}))
    for name, count in (("eval_prompts", eval_prompts), ("eval_free_form", eval_free_form)):
        if count < 1:  # found out only after training otherwise
            raise ValueError(f"`{name}` (--{name.replace('_', '-')}) must be >= 1, got {count!r}")
    device = _device(device)
    torch.manual_seed(seed)
    record: dict = {"seed": seed, "batch": batch, "device": device.type, "torch_threads": torch.get_num_threads()}
    started = time.perf_counter()
    if resume is None:
        pipe = build_pipeline(seed).to(device)
        record |= _train_vae(pipe.vae, vae_minutes, vae_batch, device, log)
        record["vae_reconstruction"] = _reconstruction_accuracy(pipe.vae, sample_scenes(128, seed=3), device)
        log(f"VAE reconstructions read back: {record['vae_reconstruction']}")
    else:
        pipe, previous = _resumed(resume, device, log)
        record |= {key: previous[key] for key in ("vae_steps", "vae_loss", "vae_reconstruction") if key in previous}
        record["resumed_from"] = previous

    # latents of a fixed training set, and (from scratch) the scale that gives them unit spread
    scenes = sample_scenes(latent_scenes, seed=1)
    with torch.no_grad():
        latents = torch.cat([pipe.vae.encode(_images(scenes[i : i + 256], device)).latent_dist.mode()
                             for i in range(0, len(scenes), 256)])
    if resume is None:
        pipe.vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
    scaling = pipe.vae.config.scaling_factor
    record["scaling_factor"] = round(scaling, 5)
    log(f"encoded {len(scenes)} scenes; scaling factor {scaling:.4f}")

    # a resumed piece draws other samples, noise and captions than the pieces before it
    previous = record.get("resumed_from", {})
    steps_before = previous.get("unet_steps_total", previous.get("unet_steps", 0))
    record |= _train_denoiser(pipe, latents * scaling, scenes, unet_minutes, batch, seed + steps_before, device, log,
                              started)
    record["unet_steps_total"] = steps_before + record["unet_steps"]
    pipe.set_progress_bar_config(disable=True)
    if resume is None:
        tiny_vae, record["tiny_vae"] = _train_tiny_vae(pipe.vae, tiny_vae_minutes, vae_batch, seed, device, log)
    else:
        tiny_vae, record["tiny_vae"] = None, record["resumed_from"].get("tiny_vae")
    record["eval"] = evaluate(pipe, sample_scenes(eval_prompts, seed=7, held_out=True))
    record["eval_free_form"] = evaluate_free_form(pipe, free_form_subset(eval_free_form))
    record["eval_settings"] = {"steps": DEFAULT_STEPS, "guidance": SERVING_GUIDANCE, "prompts": eval_prompts,
                               "free_form_prompts": min(eval_free_form, len(FREE_FORM_PROMPTS))}
    record["train_seconds"] = round(time.perf_counter() - started, 1)
    log(f"held-out accuracy: {record['eval']}")
    log(f"free-form prompts, every named attribute right: {record['eval_free_form']['overall']['all named']:.1%}")
    _save(pipe, tiny_vae, resume, out_dir, record)
    return record


def _resumed(folder: Path, device, log) -> tuple[StableDiffusionPipeline, dict]:
    """The shapes model saved in ``folder`` (float32, on ``device``, the current tokenizer adopted) and its
    training record."""
    if not (folder / "unet" / "config.json").is_file():
        raise ValueError(f"`--resume` {str(folder)!r} holds no saved model (no unet/config.json); it takes a "
                         "folder baton train-shapes saved")
    pipe = StableDiffusionPipeline.from_pretrained(folder, dtype=torch.float32, safety_checker=None,
                                                   requires_safety_checker=False)
    untrained = adopt_tokenizer(pipe)
    if untrained:
        log(f"the text encoder adopted the current vocabulary; new tokens: {', '.join(untrained)}")
    pipe.vae.requires_grad_(False).eval()
    record_path = folder / "training.json"
    return pipe.to(device), json.loads(record_path.read_text()) if record_path.is_file() else {}


def _save(pipe, tiny_vae: AutoencoderTiny | None, resumed: Path | None, out_dir: Path, record: dict) -> None:
    """The pipeline, its tiny autoencoder (trained now, or the resumed folder's), the record and the serving
    defaults, in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pipe.to("cpu", torch.float16).save_pretrained(out_dir, safe_serialization=True)
    for config in [out_dir / "model_index.json", *out_dir.glob("*/config.json")]:
        # a resumed pipeline's configs name the folder it was loaded from, a path on the training machine
        values = json.loads(config.read_text())
        if values.pop("_name_or_path", None) is not None:
            config.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")
    if tiny_vae is not None:
        _save_tiny_vae(tiny_vae, out_dir)
    elif resumed is not None and (resumed / TINY_VAE_SUBFOLDER).is_dir() and resumed.resolve() != out_dir.resolve():
        shutil.copytree(resumed / TINY_VAE_SUBFOLDER, out_dir / TINY_VAE_SUBFOLDER, dirs_exist_ok=True)
    (out_dir / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    defaults_path = out_dir / SERVING_DEFAULTS_FILE
    kept = next((path for path in (defaults_path, resumed and resumed / SERVING_DEFAULTS_FILE)
                 if path and path.is_file()), None)  # the serving defaults carry over, the guidance is this recipe's
    defaults = json.loads(kept.read_text()) if kept else {}
    defaults["guidance_scale"] = SERVING_GUIDANCE
    defaults_path.write_text(json.dumps(defaults) + "\n")


def train_tiny_vae(model_dir: Path, minutes: float = 2.0, batch: int = 16, seed: int = 0, device: str | None = None,
                   log: Callable[[str], None] = logger.info) -> dict:
    """Step 4 alone: train the tiny autoencoder of the shapes model saved in ``model_dir``, save it in its
    ``vae_tiny`` and add its record to ``training.json``; returns that record."""
    _check_budgets(tiny_vae_minutes=minutes)
    device = _device(device)
    vae = AutoencoderKL.from_pretrained(model_dir, subfolder="vae", dtype=torch.float32).to(device).eval()
    tiny_vae, tiny_record = _train_tiny_vae(vae.requires_grad_(False), minutes, batch, seed, device, log)
    _save_tiny_vae(tiny_vae, model_dir)
    record_path = model_dir / "training.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    record["tiny_vae"] = tiny_record
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    return tiny_record


def _save_tiny_vae(tiny_vae: AutoencoderTiny, model_dir: Path) -> None:
    with quiet_casts():  # diffusers warns about any float16 cast of an AutoencoderTiny
        tiny_vae.to("cpu", torch.float16)
    tiny_vae.save_pretrained(model_dir / TINY_VAE_SUBFOLDER, safe_serialization=True)


def _check_budgets(**minutes: float) -> None:
    """Before any training: a phase with no time would leave its model untrained (found out only at the end)."""
    for name, value in minutes.items():
        if not value > 0:
            raise ValueError(f"`{name}` (--{name.replace('_', '-')}) must be > 0 minutes, got {value!r}")


def _device(name: str | None) -> torch.device:
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def _object_weighted_error(decoded: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """L1 + L2, with the objects (and a pixel around them) weighed 10x: they are a few percent of the pixels, and
    unweighted a decoder learns the black background first and the colours last; L1 on top of L2 sharpens edges."""
    error = decoded - images
    weights = 1 + 9 * torch.nn.functional.max_pool2d((images.amax(dim=1, keepdim=True) > -0.5).float(), 3, 1, 1)
    return (weights * (error.pow(2) + error.abs())).mean() / weights.mean()


def _train_vae(vae, minutes: float, batch: int, device, log) -> dict:
    vae.train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=1e-3)
    scene_seed = 10_000
    for step in _budgeted_steps(optimizer, minutes):
        images = _images(sample_scenes(batch, scene_seed + step), device)
        posterior = vae.encode(images).latent_dist
        loss = _object_weighted_error(vae.decode(posterior.sample()).sample, images) + 1e-6 * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % 100 == 0:
            log(f"vae step {step + 1}: loss {loss.item():.5f}")
    vae.eval().requires_grad_(False)
    return {"vae_steps": step + 1, "vae_loss": round(loss.item(), 6)}


def _train_tiny_vae(vae, minutes: float, batch: int, seed: int, device, log) -> tuple[AutoencoderTiny, dict]:
    """Distil the trained VAE into a tiny autoencoder: its decoder maps the VAE's scaled latents (what the UNet
    makes) to the scene, its encoder maps the scene to them."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        tiny = AutoencoderTiny(**tiny_vae_architecture(upsampling_factor(vae), channels=TINY_VAE_CHANNELS))
    tiny = tiny.to(device).train()
    optimizer = torch.optim.AdamW(tiny.parameters(), lr=2e-3)
    scaling = vae.config.scaling_factor
    scene_seed = 50_000
    for step in _budgeted_steps(optimizer, minutes):
        images = _images(sample_scenes(batch, scene_seed + step), device)
        with torch.no_grad():
            posterior = vae.encode(images).latent_dist
        # decode samples, as the VAE learned to (the UNet's latents are no exact modes either); encode to modes
        decoding = _object_weighted_error(tiny.decode(posterior.sample() * scaling).sample, images)
        loss = decoding
        if step % 4 == 0:  # serving only decodes: the encoder (an easier regression) gets a quarter of the steps
            encoding = (tiny.encode(images).latents - posterior.mode() * scaling).pow(2).mean()
            loss = loss + encoding
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % 100 == 0:
            log(f"tiny vae step {step + 1}: decode loss {decoding.item():.5f}, encode loss {encoding.item():.5f}")
    tiny.eval().requires_grad_(False)
    record = {"steps": step + 1, "decode_loss": round(decoding.item(), 6), "encode_loss": round(encoding.item(), 6),
              "parameters": sum(p.numel() for p in tiny.parameters()),
              "reconstruction": _reconstruction_accuracy(vae, sample_scenes(128, seed=3), device, decoder=tiny)}
    log(f"tiny VAE decodes of the VAE's latents of fresh scenes, read back: {record['reconstruction']}")
    return tiny, record


def _train_denoiser(pipe, latents, scenes, minutes: float, batch: int, seed: int, device, log, started) -> dict:
    unet, text_encoder, tokenizer = pipe.unet.train(), pipe.text_encoder.train(), pipe.tokenizer
    parameters = [*unet.parameters(), *text_encoder.parameters()]
    optimizer = torch.optim.AdamW([
        {"params": unet.parameters(), "lr": 8e-4},
        {"params": text_encoder.parameters(), "lr": 5e-4},
    ], weight_decay=0.01)
    average = EMAModel(parameters, decay=0.999, use_ema_warmup=True, power=3 / 4)
    noise_schedule = training_scheduler()
    alphas = noise_schedule.alphas_cumprod.to(device)
    no_caption = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length,
                           return_tensors="pt").input_ids.to(device)
    generator = torch.Generator().manual_seed(seed)
    caption_rng = random.Random(seed)
    losses = []
    for step in _budgeted_steps(optimizer, minutes):
        index = torch.randint(len(latents), (batch,), generator=generator)
        captions = [varied_caption(scenes[i], caption_rng) for i in index.tolist()]
        tokens = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                           return_tensors="pt").input_ids.to(device)
        dropped = (torch.rand(batch, generator=generator) < 0.1).to(device)
        batch_tokens = torch.where(dropped[:, None], no_caption, tokens)
        noise = torch.randn((batch, *latents.shape[1:]), generator=generator).to(device)
        timesteps = torch.randint(noise_schedule.config.num_train_timesteps, (batch,), generator=generator).to(device)
        batch_latents = latents[index.to(device)]
        noisy = noise_schedule.add_noise(batch_latents, noise, timesteps)
        prediction = unet(noisy, timesteps, encoder_hidden_states=text_encoder(batch_tokens)[0]).sample
        target = noise_schedule.get_velocity(batch_latents, noise, timesteps)
        snr = alphas[timesteps] / (1 - alphas[timesteps])
        loss = (_loss_weights(snr) * (prediction - target).pow(2).mean(dim=(1, 2, 3))).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        average.step(parameters)
        losses.append(loss.item())
        if (step + 1) % 200 == 0:
            log(f"unet step {step + 1}: loss {np.mean(losses[-200:]):.4f} ({time.perf_counter() - started:.0f} s)")
    average.copy_to(parameters)
    unet.eval().requires_grad_(False)
    text_encoder.eval().requires_grad_(False)
    return {"unet_steps": step + 1, "unet_loss": round(float(np.mean(losses[-200:])), 5)}


def _loss_weights(snr: torch.Tensor) -> torch.Tensor:
    """Per-sample weights of the v-prediction loss: Min-SNR-gamma (Hang et al. 2023), in the image's terms
    ``min(snr, gamma)``, so the nearly clean steps stop dominating, plus a floor of ``HIGH_NOISE_WEIGHT``, so the
    noisiest steps, where the caption alone decides where the objects go, still teach something (at zero SNR,
    Min-SNR alone weighs them 0). A v-prediction error counts ``snr + 1`` times its image error, hence the division."""
    return (torch.clamp(snr, max=MIN_SNR_GAMMA) + HIGH_NOISE_WEIGHT) / (snr + 1)


def _budgeted_steps(optimizer, minutes: float) -> Iterator[int]:
    """Step indices (from 0) for as long as the time budget lasts, each step's learning rates set before it is
    yielded. A budget > 0 (``_check_budgets``) always yields step 0, so the caller's last index is defined."""
    step, started = 0, time.perf_counter()
    while (progress := (time.perf_counter() - started) / (60 * minutes)) < 1:
        _set_learning_rates(optimizer, step, progress)
        yield step
        step += 1


def _set_learning_rates(optimizer, step: int, progress: float) -> None:
    """Linear warm-up over the first steps, then a cosine from the base rate down to a tenth at the budget's end."""
    factor = min(1.0, (step + 1) / WARMUP_STEPS) * (0.1 + 0.45 * (1 + math.cos(math.pi * min(progress, 1.0))))
    for group in optimizer.param_groups:
        group.setdefault("base_lr", group["lr"])
        group["lr"] = group["base_lr"] * factor


def evaluate(pipe, scenes, steps: int = DEFAULT_STEPS, guidance: float = SERVING_GUIDANCE) -> dict[str, float]:
    """Share of held-out captions whose image shows each attribute (read by the detector)."""
    images = _draw(pipe, [caption(scene) for scene in scenes], steps, guidance)
    return _rounded(accuracy(scenes, images))


def evaluate_free_form(pipe, prompts=FREE_FORM_PROMPTS, steps: int = DEFAULT_STEPS,
                       guidance: float = SERVING_GUIDANCE) -> dict:
    """Per style and overall, the share of free-form prompts (one seed each) with every named attribute right, and
    per attribute (``baton.shapes.prompts.free_form_accuracy``)."""
    prompts = list(prompts)
    images = _draw(pipe, [prompt.text for prompt in prompts], steps, guidance)
    return {group: _rounded_all(shares) for group, shares in free_form_accuracy(prompts, images).items()}


def _draw(pipe, texts: list[str], steps: int, guidance: float) -> np.ndarray:
    """The 64x64 images of ``texts`` as float pixels, 16 prompts per call, each call seeded by its first index."""
    return np.concatenate([
        pipe(texts[i : i + 16], num_inference_steps=steps, guidance_scale=guidance, height=64, width=64,
             output_type="np", generator=torch.Generator().manual_seed(i)).images
        for i in range(0, len(texts), 16)
    ])


def _rounded_all(shares: dict[str, float]) -> dict[str, float]:
    return {name: round(share, 3) for name, share in shares.items()}


def _reconstruction_accuracy(vae, scenes, device, decoder=None) -> dict[str, float]:
    """How much of each scene survives ``vae``'s encode and the decode (``vae``'s own, or ``decoder``'s from the
    scaled latents), read by the detector: the ceiling for the whole model."""
    with torch.no_grad():
        latents = vae.encode(_images(scenes, device)).latent_dist.mode()
        if decoder is None:
            decoded = vae.decode(latents).sample
        else:
            decoded = decoder.decode(latents * vae.config.scaling_factor).sample
    images = ((decoded.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return _rounded(accuracy(scenes, images))


def _rounded(shares: dict[str, float]) -> dict[str, float]:
    """The per-attribute shares, as the training record keeps them."""
    return {attribute: round(share, 3) for attribute, share in shares.items() if attribute in ATTRIBUTES}


def _images(scenes, device) -> torch.Tensor:
    pixels = np.stack([render(scene) for scene in scenes]).astype(np.float32) / 127.5 - 1.0
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).to(device)  # [B, 3, 64, 64] in [-1, 1]

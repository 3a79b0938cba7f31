"""``baton train-shapes``: train the shapes model from scratch on a CPU (or a GPU), then save it.

1. The VAE learns to reconstruct rendered scenes (MSE, a tiny KL term), for a time budget.
2. Latents of a fixed set of training scenes are encoded once; their spread sets the VAE's ``scaling_factor``.
3. The UNet and the text encoder learn to predict the noise added to those latents, given the caption (dropped
   10% of the time, for classifier-free guidance), for a time budget.
4. The prompt accuracy on held-out captions is measured with the detector, and the pipeline is saved in float16
   safetensors (about 10 MB).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from baton.shapes.detector import read_scene, score
from baton.shapes.model import build_pipeline, training_scheduler
from baton.shapes.scenes import caption, render, sample_scenes

logger = logging.getLogger(__name__)


def train_shapes(out_dir: Path, vae_minutes: float = 6.0, unet_minutes: float = 30.0, batch: int = 32,
                 vae_batch: int = 16,
                 latent_scenes: int = 20_000, seed: int = 0, eval_prompts: int = 64,
                 log: Callable[[str], None] = logger.info) -> dict:
    """Train, evaluate and save; returns the training record (also written to ``out_dir/training.json``)."""
    torch.manual_seed(seed)
    pipe = build_pipeline(seed)
    record: dict = {"seed": seed, "batch": batch}
    started = time.perf_counter()

    # 1. the VAE
    vae = pipe.vae.train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=1e-3)
    step, stop_at, scene_seed = 0, time.perf_counter() + 60 * vae_minutes, 10_000
    while time.perf_counter() < stop_at:
        images = _images(sample_scenes(vae_batch, scene_seed + step))
        posterior = vae.encode(images).latent_dist
        reconstruction = vae.decode(posterior.sample()).sample
        loss = torch.nn.functional.mse_loss(reconstruction, images) + 1e-6 * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        if step % 100 == 0:
            log(f"vae step {step}: loss {loss.item():.5f}")
    record["vae_steps"], record["vae_loss"] = step, round(loss.item(), 6)
    vae.eval().requires_grad_(False)

    # 2. latents of a fixed training set, and the scale that gives them unit spread
    scenes = sample_scenes(latent_scenes, seed=1)
    with torch.no_grad():
        latents = torch.cat([vae.encode(_images(scenes[i : i + 256])).latent_dist.mode()
                             for i in range(0, len(scenes), 256)])
    scaling = float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=scaling)
    latents = latents * scaling
    captions = [caption(scene) for scene in scenes]
    record["scaling_factor"] = round(scaling, 5)
    log(f"encoded {len(scenes)} scenes; scaling factor {scaling:.4f}")

    # 3. the UNet and the text encoder
    unet, text_encoder, tokenizer = pipe.unet.train(), pipe.text_encoder.train(), pipe.tokenizer
    noise_schedule = training_scheduler()
    optimizer = torch.optim.AdamW([
        {"params": unet.parameters(), "lr": 4e-4},
        {"params": text_encoder.parameters(), "lr": 2e-4},
    ], weight_decay=0.01)
    generator = torch.Generator().manual_seed(seed)
    step, stop_at, losses = 0, time.perf_counter() + 60 * unet_minutes, []
    while time.perf_counter() < stop_at:
        index = torch.randint(len(scenes), (batch,), generator=generator)
        clean = latents[index]
        texts = [captions[i] if torch.rand(1, generator=generator).item() > 0.1 else "" for i in index.tolist()]
        tokens = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                           return_tensors="pt").input_ids
        noise = torch.randn(clean.shape, generator=generator)
        timesteps = torch.randint(noise_schedule.config.num_train_timesteps, (batch,), generator=generator)
        noisy = noise_schedule.add_noise(clean, noise, timesteps)
        prediction = unet(noisy, timesteps, encoder_hidden_states=text_encoder(tokens)[0]).sample
        loss = torch.nn.functional.mse_loss(prediction, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([*unet.parameters(), *text_encoder.parameters()], 1.0)
        optimizer.step()
        losses.append(loss.item())
        step += 1
        if step % 200 == 0:
            log(f"unet step {step}: loss {np.mean(losses[-200:]):.4f} ({time.perf_counter() - started:.0f} s)")
    record["unet_steps"], record["unet_loss"] = step, round(float(np.mean(losses[-200:])), 5)
    unet.eval().requires_grad_(False)
    text_encoder.eval().requires_grad_(False)

    # 4. a quick check on held-out captions, then save
    record["eval"] = evaluate(pipe, sample_scenes(eval_prompts, seed=7, held_out=True))
    record["train_seconds"] = round(time.perf_counter() - started, 1)
    log(f"held-out accuracy: {record['eval']}")
    out_dir.mkdir(parents=True, exist_ok=True)
    pipe.to(torch.float16).save_pretrained(out_dir, safe_serialization=True)
    import json

    (out_dir / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def evaluate(pipe, scenes, steps: int = 20, guidance: float = 4.0) -> dict[str, float]:
    """Share of held-out captions whose image shows each attribute (read by the detector)."""
    right: dict[str, int] = {}
    for i in range(0, len(scenes), 16):
        chunk = scenes[i : i + 16]
        images = pipe([caption(s) for s in chunk], num_inference_steps=steps, guidance_scale=guidance, height=64,
                      width=64, output_type="np", generator=torch.Generator().manual_seed(i)).images
        for scene, image in zip(chunk, images):
            for attribute, ok in score(scene, read_scene(image)).items():
                right[attribute] = right.get(attribute, 0) + ok
    return {attribute: round(count / len(scenes), 3) for attribute, count in right.items()}


def _images(scenes) -> torch.Tensor:
    pixels = np.stack([render(scene) for scene in scenes]).astype(np.float32) / 127.5 - 1.0
    return torch.from_numpy(pixels).permute(0, 3, 1, 2)  # [B, 3, 64, 64] in [-1, 1]

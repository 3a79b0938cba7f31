"""The shapes model: a Stable Diffusion 1.x pipeline small enough to train on a CPU in minutes.

Same format and code path as any SD1.5 checkpoint (``StableDiffusionPipeline``: CLIP text encoder and tokenizer,
UNet, AutoencoderKL, a scheduler), so it loads from its folder like a real one and runs through the same runner.
Sizes: 64x64 images, a VAE that downsamples by 4 (16x16x4 latents), a 2-layer CLIP text encoder over a small
word-level vocabulary (``baton.shapes.tokenizer``: one token per word, so a small encoder need not learn spelling).
"""

from __future__ import annotations

from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from baton.models.tokenizers import BOS_TOKEN, EOS_TOKEN
from baton.shapes.tokenizer import MAX_TOKENS, shapes_tokenizer

# SD1.5's noise schedule, rescaled so that its last step is pure noise (Lin et al. 2023, "Common Diffusion Noise
# Schedules and Sample Steps are Flawed"), with v-prediction (noise prediction is undefined at zero SNR) and
# sampling from the last step ("trailing"). On SD1.5's own schedule the last step keeps 7% of the image, and the
# model learned to read where the objects go from that leak in the noise instead of from the caption: sampled
# from pure noise, the position words changed nothing (19.5% position accuracy, chance is 20%).
SCHEDULE = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                rescale_betas_zero_snr=True, prediction_type="v_prediction")
SAMPLER = dict(SCHEDULE, timestep_spacing="trailing", steps_offset=1, clip_sample=False, set_alpha_to_one=False,
               thresholding=False)
"""The model's own sampler (DDIM), every value spelled out as ``baton.models.builtin``'s schedulers are."""
TEXT_WIDTH = 64


def build_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    """The untrained model (float32, CPU), its weights drawn from ``seed``."""
    import torch

    torch.manual_seed(seed)
    tokenizer = shapes_tokenizer()
    text_encoder = build_text_encoder(tokenizer)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64, 64),
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        layers_per_block=1, norm_num_groups=16, sample_size=64, scaling_factor=1.0,
        mid_block_add_attention=False,  # convolutions alone reconstruct these scenes, and train faster
    )
    # Levels at 16, 8, 4 and 2 latent pixels. Cross-attention at 8x8 and below only: at 16x16 (256 tokens) it
    # doubled the training step's time on a CPU. The 2x2 level is there for the position words: attention has no
    # positional encoding, so a UNet knows where it is only from its convolutions' zero padding, and at 2x2 every
    # cell is a different corner, one per region of the caption.
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(48, 96, 96, 96),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_WIDTH, attention_head_dim=32, norm_num_groups=16,
    )
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=DDIMScheduler(**SAMPLER), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )


def build_text_encoder(tokenizer) -> CLIPTextModel:
    """The untrained text encoder for ``tokenizer``'s vocabulary (weights from the current torch seed)."""
    vocab = tokenizer.get_vocab()
    return CLIPTextModel(CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=TEXT_WIDTH, intermediate_size=4 * TEXT_WIDTH, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=MAX_TOKENS, projection_dim=TEXT_WIDTH,
        bos_token_id=vocab[BOS_TOKEN], eos_token_id=vocab[EOS_TOKEN], pad_token_id=vocab[EOS_TOKEN],
    ))


def adopt_tokenizer(pipe: StableDiffusionPipeline) -> list[str]:
    """Give a saved shapes pipeline the current tokenizer, keeping what its text encoder learned (for ``baton
    train-shapes --resume`` from weights saved with an older vocabulary).

    Every layer carries over. A token embedding carries over by word: a word the old vocabulary had keeps its
    row, the rest start untrained. Position embeddings carry over for the positions the old encoder had. Returns
    the words that start untrained (empty when the vocabularies already agree)."""
    import torch

    tokenizer = shapes_tokenizer()
    if pipe.tokenizer.get_vocab() == tokenizer.get_vocab() and pipe.tokenizer.model_max_length == MAX_TOKENS:
        pipe.register_modules(tokenizer=tokenizer)  # the same vocabulary, saved without a loader's settings
        return []
    old_vocab, old = pipe.tokenizer.get_vocab(), pipe.text_encoder
    new = build_text_encoder(tokenizer).to(old.device, old.dtype)
    old_state, new_state = old.state_dict(), new.state_dict()
    tokens_key = "embeddings.token_embedding.weight"
    positions_key = "embeddings.position_embedding.weight"
    for key, value in old_state.items():
        if key in new_state and key not in (tokens_key, positions_key) and value.shape == new_state[key].shape:
            new_state[key] = value
    untrained = []
    with torch.no_grad():
        for word, index in tokenizer.get_vocab().items():
            if word in old_vocab:
                new_state[tokens_key][index] = old_state[tokens_key][old_vocab[word]]
            else:
                untrained.append(word)
        shared = min(len(old_state[positions_key]), MAX_TOKENS)
        new_state[positions_key][:shared] = old_state[positions_key][:shared]
    new.load_state_dict(new_state)
    pipe.register_modules(tokenizer=tokenizer, text_encoder=new)
    return sorted(untrained)


def training_scheduler() -> DDPMScheduler:
    """The noise schedule training adds noise with: the same betas as the pipeline's sampler."""
    return DDPMScheduler(**SCHEDULE, clip_sample=False)

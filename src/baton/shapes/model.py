"""The shapes model: a Stable Diffusion 1.x pipeline small enough to train on a CPU in minutes.

Same format and code path as any SD1.5 checkpoint (``StableDiffusionPipeline``: CLIP text encoder and tokenizer,
UNet, AutoencoderKL, a scheduler), so it loads from its folder like a real one and runs through the same runner.
Sizes: 64x64 images, a VAE that downsamples by 4 (16x16x4 latents), a 2-layer CLIP text encoder over a word-level
vocabulary of the captions' words (one token per word: a small encoder need not learn spelling).
"""

from __future__ import annotations

from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.normalizers import Lowercase
from tokenizers.pre_tokenizers import WhitespaceSplit
from tokenizers.processors import TemplateProcessing
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

from baton.models.tokenizers import BOS_TOKEN, EOS_TOKEN
from baton.shapes.scenes import COLOURS, COUNTS, POSITIONS, SHAPES, SIZES

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
MAX_TOKENS = 16  # "three large magenta triangles at the bottom right on a black background" is 12 words


def caption_words() -> list[str]:
    words = {"on", "a", "black", "background", "at", "the", "in"}
    words |= set(COLOURS) | set(SIZES) | set(COUNTS.values()) | {"one"}
    words |= set(SHAPES) | {shape + "s" for shape in SHAPES}
    words |= {word for position in POSITIONS for word in position.split()}
    return sorted(words)


def word_tokenizer() -> PreTrainedTokenizerFast:
    """One token per caption word (a word-level vocabulary; any other word is the unknown token), with CLIP's
    start and end tokens around and end tokens as padding, as the SD pipelines expect."""
    words = [BOS_TOKEN, EOS_TOKEN, *caption_words()]
    vocab = {word: index for index, word in enumerate(words)}
    model = Tokenizer(WordLevel(vocab, unk_token=EOS_TOKEN))
    model.normalizer = Lowercase()
    model.pre_tokenizer = WhitespaceSplit()
    model.post_processor = TemplateProcessing(single=f"{BOS_TOKEN} $A {EOS_TOKEN}",
                                              special_tokens=[(BOS_TOKEN, 0), (EOS_TOKEN, 1)])
    return PreTrainedTokenizerFast(tokenizer_object=model, bos_token=BOS_TOKEN, eos_token=EOS_TOKEN,
                                   unk_token=EOS_TOKEN, pad_token=EOS_TOKEN, model_max_length=MAX_TOKENS)


def build_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    """The untrained model (float32, CPU), its weights drawn from ``seed``."""
    import torch

    torch.manual_seed(seed)
    tokenizer = word_tokenizer()
    vocab = tokenizer.get_vocab()
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=TEXT_WIDTH, intermediate_size=4 * TEXT_WIDTH, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=MAX_TOKENS, projection_dim=TEXT_WIDTH,
        bos_token_id=vocab[BOS_TOKEN], eos_token_id=vocab[EOS_TOKEN], pad_token_id=vocab[EOS_TOKEN],
    ))
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


def training_scheduler() -> DDPMScheduler:
    """The noise schedule training adds noise with: the same betas as the pipeline's sampler."""
    return DDPMScheduler(**SCHEDULE, clip_sample=False)

"""The tiny autoencoder's architecture per upsampling factor, and which VAE ``tiny`` names."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL, AutoencoderTiny

from baton.optim.vae import (
    TINY_VAE_SUBFOLDER,
    check_vae_fits,
    resolve_vae_name,
    tiny_vae_architecture,
    upsampling_factor,
)


def test_the_published_tiny_autoencoder_is_the_8x_architecture():
    def architecture(vae):
        return {key: value for key, value in vae.config.items() if not key.startswith("_")}

    assert architecture(AutoencoderTiny(**tiny_vae_architecture(8))) == architecture(AutoencoderTiny())


@pytest.mark.parametrize("factor", [2, 4, 8, 16])
def test_the_tiny_autoencoder_upsamples_by_the_asked_factor(factor):
    tiny = AutoencoderTiny(**tiny_vae_architecture(factor, channels=8))
    assert upsampling_factor(tiny) == factor
    assert tiny.decode(torch.zeros(1, 4, 3, 3)).sample.shape == (1, 3, 3 * factor, 3 * factor)


@pytest.mark.parametrize("factor", [0, 1, 3, 6])
def test_a_factor_that_is_no_power_of_two_is_refused(factor):
    with pytest.raises(ValueError, match=f"power of 2, got {factor}"):
        tiny_vae_architecture(factor)


def test_a_kl_vae_upsamples_by_two_per_level():
    vae = AutoencoderKL(block_out_channels=(8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 3,
                        up_block_types=("UpDecoderBlock2D",) * 3, norm_num_groups=8)
    assert upsampling_factor(vae) == 4


def test_tiny_names_the_model_folders_own_tiny_autoencoder_if_it_has_one(tmp_path):
    assert resolve_vae_name("tiny", "taesd", str(tmp_path)) == "taesd"
    assert resolve_vae_name("tiny", "taesdxl", None) == "taesdxl"
    (tmp_path / TINY_VAE_SUBFOLDER).mkdir()
    (tmp_path / TINY_VAE_SUBFOLDER / "config.json").write_text("{}")
    assert resolve_vae_name("tiny", "taesd", str(tmp_path)) == str(tmp_path / TINY_VAE_SUBFOLDER)
    assert resolve_vae_name("taesd", "taesdxl", str(tmp_path)) == "taesd"  # an explicit name is taken as given


def test_a_replacement_must_fit_the_models_latents():
    tiny = AutoencoderTiny(**tiny_vae_architecture(4, channels=8))
    check_vae_fits(tiny, latent_channels=4, upsampling=4, name="t")
    with pytest.raises(ValueError, match="`vae` 't' upsamples latents 4x and the model's own VAE 8x"):
        check_vae_fits(tiny, latent_channels=4, upsampling=8, name="t")
    with pytest.raises(ValueError, match="`vae` 't' decodes 4-channel latents and the model makes 16-channel ones"):
        check_vae_fits(tiny, latent_channels=16, upsampling=4, name="t")
    # 8x in two levels of 8x would fit by size, but diffusers' stacked pipeline counts 2x per level
    coarse = AutoencoderTiny(encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
                             num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1), upsampling_scaling_factor=8)
    with pytest.raises(ValueError, match="upsamples 8x per level"):
        check_vae_fits(coarse, latent_channels=4, upsampling=8, name="t")

"""Real users load folders and hub ids: a saved pipeline loads through the same path and gives the same images."""

import numpy as np
import pytest
import torch

from baton import Engine, InvalidRequestError, RequestLimits
from baton.models import ModelLoadError, load_model
from baton.models.builtin import SPECS


@pytest.mark.parametrize("model", ["tiny-sd15", "tiny-sdxl"])
def test_a_saved_folder_loads_and_generates_the_same_images(tmp_path, model):
    folder = tmp_path / model
    SPECS[model].build(torch.device("cpu"), torch.float32).save_pretrained(folder)
    request = dict(prompt="a red fox", width=64, height=64, steps=3, seed=11, scheduler="euler", output_format="np")
    with Engine(models=model, device="cpu") as builtin, Engine(models=str(folder), device="cpu") as loaded:
        assert loaded.runners[str(folder)].family == builtin.runners[model].family
        expected = builtin.generate(**request).pixels
        actual = loaded.generate(**request).pixels
    # Loaded tensors are not 64-byte aligned, so CPU GEMMs may sum in another order: ~1e-6, not bitwise.
    assert float(np.abs(actual - expected).max()) <= 1e-5


def test_an_lcm_distilled_sd15_folder_loads_as_sd15_with_its_lcm_sampler(tmp_path):
    """Such folders name diffusers' LatentConsistencyModelPipeline; its components are SD1.5's."""
    SPECS["tiny-lcm"].build(torch.device("cpu"), torch.float32).save_pretrained(tmp_path)
    index = tmp_path / "model_index.json"
    index.write_text(index.read_text().replace('"StableDiffusionPipeline"', '"LatentConsistencyModelPipeline"'))
    request = dict(prompt="a red fox", width=64, height=64, steps=4, seed=3, guidance_scale=8.5, output_format="np")
    with Engine(models="tiny-lcm", device="cpu") as builtin, Engine(models=str(tmp_path), device="cpu") as loaded:
        runner = loaded.runners[str(tmp_path)]
        assert runner.family == "sd15" and runner.embeds_guidance
        assert type(runner.schedulers.template("default")).__name__ == "LCMScheduler"
        difference = np.abs(loaded.generate(**request).pixels - builtin.generate(**request).pixels).max()
    assert float(difference) <= 1e-5


def test_an_unknown_name_says_what_would_have_worked():
    with pytest.raises(ModelLoadError, match="not a built-in model .*tiny-sd15.*tiny-sdxl"):
        load_model("no-such-org/no-such-model", torch.device("cpu"), torch.float32)


def test_an_unsupported_pipeline_is_refused_by_name(tmp_path):
    (tmp_path / "model_index.json").write_text('{"_class_name": "WanPipeline", "_diffusers_version": "0.42.1"}')
    with pytest.raises(ModelLoadError, match="WanPipeline.*supported pipelines.*FluxPipeline"):
        load_model(str(tmp_path), torch.device("cpu"), torch.float32)


@pytest.mark.parametrize("variant", ["FluxKontextPipeline", "FluxFillPipeline"])
def test_a_flux_variant_that_needs_an_image_is_refused_with_the_reason(tmp_path, variant):
    (tmp_path / "model_index.json").write_text(f'{{"_class_name": "{variant}", "_diffusers_version": "0.42.1"}}')
    with pytest.raises(ModelLoadError, match=f"{variant}, which baton does not serve: .*input image"):
        load_model(str(tmp_path), torch.device("cpu"), torch.float32)


def test_builtin_full_size_models_have_the_published_shapes():
    sd15 = SPECS["sd15-random"].parameter_counts()
    assert sd15 == {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480}
    sdxl = SPECS["sdxl-random"].parameter_counts()
    assert sdxl["unet"] == 2_567_463_684 and sdxl["text_encoder_2"] == 694_659_840


@pytest.mark.parametrize("model", ["tiny-sd15", "tiny-sdxl"])
def test_tiny_models_stay_tiny(model):
    assert sum(SPECS[model].parameter_counts().values()) < 2_000_000


def test_a_folder_may_set_its_size_limit_and_example_prompt_in_baton_json(tmp_path):
    SPECS["tiny-sd15"].build(torch.device("cpu"), torch.float32).save_pretrained(tmp_path)
    (tmp_path / "baton.json").write_text('{"max_size": 320, "example_prompt": "a fox"}')
    with Engine(models=str(tmp_path), device="cpu") as engine:
        assert engine.max_sizes[str(tmp_path)] == 320
        assert engine.describe()["models"][0]["example_prompt"] == "a fox"
        with pytest.raises(InvalidRequestError, match="between 64 and 320"):
            engine.resolve(prompt="a fox", width=328)
    limits = RequestLimits(max_size=512)  # an explicit engine limit wins over the folder's
    with Engine(models=str(tmp_path), device="cpu", limits=limits) as engine:
        assert engine.max_sizes[str(tmp_path)] == 512


def test_a_folder_may_set_its_guidance_scale_in_baton_json(tmp_path):
    SPECS["tiny-sd15"].build(torch.device("cpu"), torch.float32).save_pretrained(tmp_path)
    (tmp_path / "baton.json").write_text('{"guidance_scale": 2.5}')
    assert load_model(str(tmp_path), torch.device("cpu"), torch.float32).default_guidance_scale == 2.5
    with Engine(models=str(tmp_path), device="cpu") as engine:
        assert engine.resolve(prompt="a fox").guidance_scale == 2.5
        assert engine.resolve(prompt="a fox", guidance_scale=7.0).guidance_scale == 7.0
    for text, error in (('{"guidance_scale": -1}', "guidance_scale.*finite number >= 0, got -1"),
                        ('{"steps": 20}', "only \\['guidance_scale', 'max_size', 'example_prompt'\\]"),
                        ("{oops", "not valid JSON"), ('{"max_size": 100}', "max_size.*multiple of 8, got 100"),
                        ('{"max_size": 128}', "at least the model's native size 256, got 128"),
                        ('{"example_prompt": ""}', "example_prompt.*non-empty string")):
        (tmp_path / "baton.json").write_text(text)
        with pytest.raises(ModelLoadError, match=error):
            load_model(str(tmp_path), torch.device("cpu"), torch.float32)

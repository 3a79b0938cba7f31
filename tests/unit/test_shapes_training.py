"""``baton train-shapes`` in miniature: a few steps train, evaluate and save a pipeline that baton then loads."""

from __future__ import annotations

import json

from baton import Engine
from baton.cli import main
from baton.config import OptimizationConfig


def test_a_tiny_training_run_saves_a_pipeline_the_engine_serves(tmp_path):
    out = tmp_path / "shapes"
    code = main(["train-shapes", "--out", str(out), "--vae-minutes", "0.02", "--unet-minutes", "0.02",
                 "--tiny-vae-minutes", "0.01", "--scenes", "64", "--eval-prompts", "4", "--eval-free-form", "3",
                 "--batch", "4"])
    assert code == 0
    record = json.loads((out / "training.json").read_text())
    assert record["vae_steps"] >= 1 and record["unet_steps"] >= 1 and record["scaling_factor"] > 0
    assert set(record["eval"]) == {"colour", "shape", "count", "size", "position"}
    assert record["eval_free_form"]["overall"].keys() >= {"all named", "colour", "shape", "count"}
    assert record["eval_settings"]["free_form_prompts"] == 3 and "resumed_from" not in record
    assert record["tiny_vae"]["steps"] >= 1 and set(record["tiny_vae"]["reconstruction"]) == set(record["eval"])
    assert (out / "vae_tiny" / "config.json").is_file()
    assert sum(f.stat().st_size for f in out.rglob("*.safetensors")) < 20 * 2**20  # float16 weights
    with Engine(models=str(out), device="cpu") as engine:
        runner = engine.runners[str(out)]
        assert runner.family == "sd15" and runner.default_size == 64
        result = engine.generate(prompt="two small red circles at the top left on a black background", steps=2,
                                 seed=0)
    assert result.images[0].size == (64, 64)
    with Engine(models=str(out), device="cpu", optimizations=OptimizationConfig(vae="tiny")) as engine:
        described = engine.describe()["models"][0]["optimizations"]
        result = engine.generate(prompt="a red circle", steps=2, seed=0)
    assert f"vae replaced by {out / 'vae_tiny'} (AutoencoderTiny, float32)" in described
    assert result.images[0].size == (64, 64)


def test_tiny_vae_only_trains_the_tiny_autoencoder_of_a_saved_model(tmp_path, capsys):
    import shutil

    from baton.models.registry import EMBEDDED_MODELS

    assert main(["train-shapes", "--out", str(tmp_path / "empty"), "--tiny-vae-only"]) == 2
    assert "holds no saved model" in capsys.readouterr().err
    assert main(["train-shapes", "--out", str(tmp_path / "empty"), "--tiny-vae-minutes", "0"]) == 2
    assert "`tiny_vae_minutes` (--tiny-vae-minutes) must be > 0 minutes, got 0.0" in capsys.readouterr().err
    assert not (tmp_path / "empty").exists()  # refused before any training
    folder = tmp_path / "shapes"
    shutil.copytree(EMBEDDED_MODELS["shapes"], folder, ignore=shutil.ignore_patterns("vae_tiny"))
    before = json.loads((folder / "training.json").read_text())
    del before["tiny_vae"]
    (folder / "training.json").write_text(json.dumps(before))
    assert main(["train-shapes", "--out", str(folder), "--tiny-vae-only", "--tiny-vae-minutes", "0.01"]) == 0
    record = json.loads((folder / "training.json").read_text())
    assert record.pop("tiny_vae")["steps"] >= 1 and record == before  # the rest of the record stays
    assert (folder / "vae_tiny" / "diffusion_pytorch_model.safetensors").is_file()


def test_resume_trains_on_from_saved_weights_and_keeps_the_autoencoders(tmp_path, capsys):
    import shutil

    from baton.models.registry import EMBEDDED_MODELS

    folder = tmp_path / "shapes"
    assert main(["train-shapes", "--out", str(folder), "--resume", str(tmp_path / "nothing")]) == 2
    assert "`--resume` " in capsys.readouterr().err and not folder.exists()  # refused before any training
    shutil.copytree(EMBEDDED_MODELS["shapes"], folder)
    before = json.loads((folder / "training.json").read_text())
    unet = (folder / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    more = tmp_path / "more"
    assert main(["train-shapes", "--out", str(more), "--resume", str(folder), "--unet-minutes", "0.02",
                 "--scenes", "64", "--eval-prompts", "2", "--eval-free-form", "2", "--batch", "4"]) == 0
    record = json.loads((more / "training.json").read_text())
    assert record["resumed_from"] == before and record["unet_steps"] >= 1
    assert record["unet_steps_total"] == before["unet_steps_total"] + record["unet_steps"]
    assert record["scaling_factor"] == before["scaling_factor"] and record["tiny_vae"] == before["tiny_vae"]
    for autoencoder in ("vae", "vae_tiny"):  # kept as they were, byte for byte
        weights = f"{autoencoder}/diffusion_pytorch_model.safetensors"
        assert (more / weights).read_bytes() == (folder / weights).read_bytes()
    assert (more / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() != unet
    assert json.loads((more / "baton.json").read_text()) == json.loads((folder / "baton.json").read_text())
    assert "_name_or_path" not in (more / "unet" / "config.json").read_text()  # no path of the training machine


def test_a_text_encoder_saved_with_another_vocabulary_adopts_the_current_one_by_word():
    import torch
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    from baton.models.tokenizers import BOS_TOKEN, EOS_TOKEN
    from baton.shapes.model import adopt_tokenizer, build_pipeline, build_text_encoder
    from baton.shapes.tokenizer import MAX_TOKENS

    # the first shapes vocabulary: caption words only, unknown words read as the end token, 16 positions
    old_words = [BOS_TOKEN, EOS_TOKEN, "red", "circle", "zebra"]
    model = Tokenizer(WordLevel({w: i for i, w in enumerate(old_words)}, unk_token=EOS_TOKEN))
    model.pre_tokenizer = WhitespaceSplit()
    old_tokenizer = PreTrainedTokenizerFast(tokenizer_object=model, bos_token=BOS_TOKEN, eos_token=EOS_TOKEN,
                                            unk_token=EOS_TOKEN, pad_token=EOS_TOKEN, model_max_length=16)
    pipe = build_pipeline()
    old_encoder = build_text_encoder(old_tokenizer)
    old_encoder.embeddings.position_embedding = torch.nn.Embedding(16, 64)
    pipe.register_modules(tokenizer=old_tokenizer, text_encoder=old_encoder)
    old_tokens = old_encoder.embeddings.token_embedding.weight.detach().clone()
    old_positions = old_encoder.embeddings.position_embedding.weight.detach().clone()

    untrained = adopt_tokenizer(pipe)
    vocab = pipe.tokenizer.get_vocab()
    embeddings = pipe.text_encoder.embeddings
    assert pipe.tokenizer.model_max_length == MAX_TOKENS and embeddings.position_embedding.num_embeddings == 32
    for word in ("red", "circle", EOS_TOKEN):
        assert torch.equal(embeddings.token_embedding.weight[vocab[word]], old_tokens[old_words.index(word)])
    assert "<unk>" in untrained and "blue" in untrained and "red" not in untrained and "zebra" not in vocab
    assert torch.equal(embeddings.position_embedding.weight[:16], old_positions)
    assert torch.equal(pipe.text_encoder.final_layer_norm.weight, old_encoder.final_layer_norm.weight)
    assert adopt_tokenizer(pipe) == []  # already current

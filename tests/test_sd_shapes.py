"""The reduced SD-shaped pipeline: built from configs, saved, and loaded through load_model."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json  # noqa: E402
import shutil  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

import genunlearn  # noqa: E402
from genunlearn.models.sd import SDAdapter  # noqa: E402
from genunlearn.testbed.sd_configs import (  # noqa: E402
    build_random_pipeline,
    save_random_pipeline,
    text_encoder_config,
    unet_config,
    vae_config,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and do not fight other jobs for the cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def built():
    """The in-memory reduced pipeline (seed 0)."""
    return build_random_pipeline("reduced", seed=0)


@pytest.fixture(scope="module")
def saved(built, tmp_path_factory):
    """``built`` written with save_pretrained."""
    path = tmp_path_factory.mktemp("sd_reduced") / "pipe"
    built.save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="module")
def adapter(saved):
    return genunlearn.load_model(str(saved))


def _state(pipe):
    return {
        f"{c}.{k}": v
        for c in ("unet", "text_encoder", "vae")
        for k, v in getattr(pipe, c).state_dict().items()
    }


def test_configs_are_sd_shaped():
    sd = unet_config("sd15")
    assert sd["block_out_channels"] == (320, 640, 1280, 1280)
    assert sd["down_block_types"] == ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
    assert sd["up_block_types"] == ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3
    assert (sd["cross_attention_dim"], sd["sample_size"]) == (768, 64)
    te = text_encoder_config("sd15")
    assert (te["hidden_size"], te["num_hidden_layers"], te["vocab_size"]) == (768, 12, 49408)
    assert vae_config("sd15")["block_out_channels"] == (128, 256, 512, 512)
    red = unet_config("reduced")
    assert set(red["down_block_types"]) == {"CrossAttnDownBlock2D", "DownBlock2D"}
    assert red["cross_attention_dim"] == text_encoder_config("reduced")["hidden_size"]
    with pytest.raises(genunlearn.GenUnlearnError, match="sd15"):
        unet_config("sd14")


def test_loaded_weights_equal_saved(built, adapter):
    want, got = _state(built), _state(adapter.pipe)
    assert want.keys() == got.keys()
    for k, v in want.items():
        assert torch.equal(v, got[k]), k
    assert len(adapter.tokenizer) == len(built.tokenizer)
    assert adapter.tokenizer.model_max_length == 77


def test_same_seed_same_weights_other_seed_differs(built):
    again = build_random_pipeline("reduced", seed=0)
    other = build_random_pipeline("reduced", seed=1)
    w = "conv_in.weight"
    assert torch.equal(built.unet.state_dict()[w], again.unet.state_dict()[w])
    assert not torch.equal(built.unet.state_dict()[w], other.unet.state_dict()[w])


def test_cross_attention_named_like_sd(adapter):
    names = [n for n, _ in adapter.denoiser.named_modules()]
    to_k = [n for n in names if n.endswith("attn2.to_k")]
    to_v = [n for n in names if n.endswith("attn2.to_v")]
    # Two layers per block in the cross-attention down block, three per up block, one mid.
    assert len(to_k) == len(to_v) == 2 + 3 + 1
    assert "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k" in to_k
    assert "mid_block.attentions.0.transformer_blocks.0.attn2.to_v" in to_v
    layers = adapter.cross_attention_layers()
    assert sorted(f"{n}.to_k" for n in layers) == sorted(to_k)
    d = unet_config("reduced")["cross_attention_dim"]
    assert all(m.to_k.in_features == d and m.to_v.in_features == d for m in layers.values())


def test_encode_and_predict_shapes(adapter):
    d = unet_config("reduced")["cross_attention_dim"]
    cond = adapter.encode_prompt(["a photo"])
    assert cond.shape == (1, 77, d)
    x = torch.randn(1, *adapter.latent_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        eps = adapter.predict_noise(x, torch.tensor([500]), cond)
    assert eps.shape == x.shape == (1, 4, 8, 8)
    assert torch.isfinite(eps).all()


def test_sample_deterministic_and_round_trips(built, adapter, tmp_path):
    a = adapter.sample(["a cat"], n=2, steps=2, seed=3)
    b = adapter.sample(["a cat"], n=2, steps=2, seed=3)
    assert a.shape == (2, 3, 64, 64)
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b)
    # The in-memory pipeline (never saved) samples the same images as the loaded one ...
    mem = SDAdapter(built, "in-memory", "none")
    assert torch.allclose(mem.sample(["a cat"], n=2, steps=2, seed=3), a, atol=1e-6)
    # ... and so does a second save/load round trip.
    adapter.pipe.save_pretrained(tmp_path / "again", safe_serialization=True)
    again = genunlearn.load_model(str(tmp_path / "again"))
    assert torch.equal(again.sample(["a cat"], n=2, steps=2, seed=3), a)
    c = adapter.sample(["a cat"], n=2, steps=2, seed=4)
    assert (c - a).abs().max() > 1e-4
    assert (a[0] - a[1]).abs().max() > 1e-4  # image i uses seed + i


def test_save_random_pipeline_loads(tmp_path):
    path = save_random_pipeline(tmp_path / "p", "reduced", seed=2)
    assert (path / "model_index.json").is_file()
    model = genunlearn.load_model(str(path))
    assert model.latent_shape == (4, 8, 8)


def test_directory_without_model_index(tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(genunlearn.GenUnlearnError, match="model_index.json"):
        genunlearn.load_model(str(tmp_path))


def test_directory_missing_unet(saved, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(saved, broken)
    shutil.rmtree(broken / "unet")
    assert "unet" in json.loads((broken / "model_index.json").read_text())
    with pytest.raises(genunlearn.GenUnlearnError, match="'unet'"):
        genunlearn.load_model(str(broken))

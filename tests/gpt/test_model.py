"""The whole GPT-2 model: gradient of the loss against every parameter, the tied embedding,
parameter layout and count, dtypes."""
import numpy as np
import pytest

from gpt.config import GPTConfig
from gpt.model import GPT, count_parameters, parameter_shapes
from minigrad import Backend
from minigrad.gradcheck import gradcheck

SMALL = GPTConfig(n_layer=2, n_head=2, n_embd=8, block_size=6, vocab_size=11)


def random_model(cfg, seed=0, dtype="float64", scale=0.3):
    """A model with larger-than-init random weights, so every gradient is well above noise."""
    model = GPT(cfg, Backend("cpu", dtype), seed=seed)
    rng = np.random.default_rng(seed)
    model.params[...] += rng.normal(0.0, scale, model.params.size)
    model.p["wte.weight"][cfg.vocab_size:] = 0.0
    return model


@pytest.mark.parametrize("B,T", [(2, 5), (1, 1), (1, 6), (3, 1)])
def test_whole_model_gradient_matches_finite_differences(B, T):
    model = random_model(SMALL)
    rng = np.random.default_rng(1)
    idx = rng.integers(0, SMALL.vocab_size, (B, T))
    targets = rng.integers(0, SMALL.vocab_size, (B, T))
    model.zero_grad()
    model.forward(idx, targets)
    model.backward()
    errors = gradcheck(lambda: model.forward(idx, targets)[1], model.p, model.g)
    assert set(errors) == {name for name, _ in parameter_shapes(SMALL)}
    worst = max(errors.items(), key=lambda kv: kv[1][1])
    assert worst[1][1] < 1e-6, f"{worst[0]}: relative error {worst[1][1]:.2e}"


def test_gradient_with_ignored_targets_matches_finite_differences():
    model = random_model(SMALL, seed=3)
    rng = np.random.default_rng(2)
    idx = rng.integers(0, SMALL.vocab_size, (2, 4))
    targets = rng.integers(0, SMALL.vocab_size, (2, 4))
    targets[0, :2] = -1
    model.forward(idx, targets)
    model.backward()
    errors = gradcheck(lambda: model.forward(idx, targets)[1], model.p, model.g)
    assert max(rel for _, rel in errors.values()) < 1e-6


def test_tied_embedding_gets_gradient_from_both_uses():
    """d loss / d wte = (output head part) + (input embedding part), both present."""
    cfg = SMALL
    model = random_model(cfg, seed=5)
    idx = np.array([[1, 2, 2, 4]])                   # tokens 1, 2, 4 are inputs; others are not
    targets = np.array([[3, 5, 1, 7]])
    logits, _ = model.forward(idx, targets)
    lnf_out = model._cache["head"][0].reshape(-1, cfg.n_embd)          # (N, C) input of the head
    z = logits.reshape(-1, cfg.padded_vocab_size)[:, : cfg.vocab_size]
    probs = np.exp(z - z.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    probs[np.arange(4), targets.reshape(-1)] -= 1.0
    head_part = (probs / 4).T @ lnf_out                                # (V, C) head-only gradient
    model.zero_grad()
    model.backward()
    dwte = model.g["wte.weight"][: cfg.vocab_size]
    emb_part = dwte - head_part
    unused = [v for v in range(cfg.vocab_size) if v not in (1, 2, 4)]
    assert np.abs(head_part).max() > 1e-3
    assert np.allclose(emb_part[unused], 0.0, atol=1e-12)              # unused rows: head only
    for v in (1, 2, 4):                                                # input rows: both parts
        assert np.abs(emb_part[v]).max() > 1e-3


def test_parameter_names_and_shapes_follow_hugging_face():
    cfg = GPTConfig.preset("gpt2", vocab_size=50257)
    shapes = dict(parameter_shapes(cfg))
    assert shapes["wte.weight"] == (50304, 768)                        # padded to a multiple of 64
    assert shapes["wpe.weight"] == (1024, 768)
    assert shapes["h.0.attn.c_attn.weight"] == (768, 2304)
    assert shapes["h.11.mlp.c_proj.weight"] == (3072, 768)
    assert shapes["ln_f.bias"] == (768,)
    assert len(shapes) == 2 + 12 * 12 + 2


def test_parameter_counts_of_the_gpt2_presets():
    expected = {"gpt2": 124_439_808, "gpt2-medium": 354_823_168, "gpt2-large": 774_030_080, "gpt2-xl": 1_557_611_200}
    for name, count in expected.items():
        assert count_parameters(GPTConfig.preset(name, vocab_size=50257)) == count


def test_repr_shows_parameter_count():
    model = GPT(GPTConfig.preset("tiny", vocab_size=256), Backend("cpu"))
    assert f"{count_parameters(model.config):,} parameters" in repr(model)


def test_views_share_the_flat_buffers():
    model = GPT(SMALL, Backend("cpu"))
    model.p["h.1.ln_2.bias"][...] = 7.0
    assert (model.params == 7.0).sum() == SMALL.n_embd
    model.g["ln_f.weight"][...] = 1.0
    assert model.grads.sum() == SMALL.n_embd


def test_init_follows_gpt2():
    cfg = GPTConfig.preset("small", vocab_size=1000)
    model = GPT(cfg, Backend("cpu"), seed=0)
    p = model.p
    assert np.all(p["wte.weight"][1000:] == 0.0)
    assert abs(p["wte.weight"][:1000].std() - 0.02) < 1e-3
    assert abs(p["h.0.attn.c_proj.weight"].std() - 0.02 / np.sqrt(2 * cfg.n_layer)) < 1e-3
    assert np.all(p["h.0.ln_1.weight"] == 1.0) and np.all(p["h.0.attn.c_attn.bias"] == 0.0)
    mask = model.decay_mask()
    assert mask.sum() == sum(v.size for v in p.values() if v.ndim == 2)


def test_float32_stays_float32():
    model = random_model(SMALL, dtype="float32")
    idx = np.array([[1, 2, 3]])
    logits, loss = model.forward(idx, idx)
    model.backward()
    assert logits.dtype == np.float32 and model.grads.dtype == np.float32
    assert np.isfinite(loss)


def test_padding_columns_do_not_change_the_loss():
    """The padded head rows get no probability: the loss equals that of the real columns."""
    model = random_model(SMALL, seed=7)
    model.p["wte.weight"][SMALL.vocab_size:] = 5.0                    # even non-zero padding
    idx = np.array([[1, 2, 3, 4]])
    logits, loss = model.forward(idx, idx)
    z = logits[0, :, : SMALL.vocab_size]
    ref = np.mean(np.log(np.exp(z).sum(-1)) - z[np.arange(4), idx[0]])
    assert abs(loss - ref) < 1e-12

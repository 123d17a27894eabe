"""AdamW, reference and fast update (the `ops` fixture), against a per-element float64 reference
(and torch when installed), masked weight decay, state round-trip, the warm-up + cosine
schedule, and global-norm clipping."""
import math

import numpy as np
import pytest

from minigrad import AdamW, kernels, lr_at
from minigrad.cpu.optim import CHUNK

N = 40
LRS = [1e-3, 3e-3, 2e-2, 1e-2, 5e-3]            # a changing learning rate, one per step
CONFIGS = [dict(betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1),
           dict(betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05)]


def problem(seed=0):
    """(params, mask, grads per step): grads mix O(1) and O(1e-8) entries so eps matters."""
    rng = np.random.default_rng(seed)
    params = rng.standard_normal(N)
    mask = rng.random(N) < 0.5
    scales = np.where(rng.random(N) < 0.25, 1e-8, 1.0)
    grads = [scales * rng.standard_normal(N) for _ in LRS]
    return params, mask, grads


def adamw_reference(params, mask, grads, lrs, betas, eps, weight_decay):
    """torch.optim.AdamW's algorithm element by element in Python floats -> (p, m, v) per step."""
    b1, b2 = betas
    p, m, v = [float(x) for x in params], [0.0] * len(params), [0.0] * len(params)
    history = []
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        for i in range(len(p)):
            if mask[i]:
                p[i] *= 1 - lr * weight_decay
            m[i] = b1 * m[i] + (1 - b1) * g[i]
            v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i]
            m_hat, v_hat = m[i] / (1 - b1 ** t), v[i] / (1 - b2 ** t)
            p[i] -= lr * m_hat / (math.sqrt(v_hat) + eps)
        history.append((list(p), list(m), list(v)))
    return history


def run_adamw(ops, params, mask, grads, lrs, **config):
    """Our AdamW over the steps -> (p, m, v) copies per step."""
    p, g = params.copy(), np.zeros_like(params)
    opt = AdamW(p, g, mask, ops=ops, **config)
    history = []
    for grad, lr in zip(grads, lrs):
        g[...] = grad
        opt.step(lr)
        history.append((p.copy(), opt.m.copy(), opt.v.copy()))
    return history


@pytest.mark.parametrize("config", CONFIGS, ids=["default", "other"])
def test_adamw_matches_reference(ops, config):
    """5 steps, changing lr, random grads: p, m, v match the reference after every step."""
    params, mask, grads = problem()
    ours = run_adamw(ops, params, mask, grads, LRS, **config)
    ref = adamw_reference(params, mask, grads, LRS, **config)
    for step, (got, want) in enumerate(zip(ours, ref)):
        for name, a, b in zip("pmv", got, want):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-30, err_msg=f"{name} at step {step + 1}")


@pytest.mark.parametrize("config", CONFIGS, ids=["default", "other"])
def test_adamw_matches_torch(ops, config):
    """Same steps through torch.optim.AdamW with decayed and undecayed parameter groups."""
    torch = pytest.importorskip("torch")
    params, mask, grads = problem()
    groups = [torch.tensor(params[sel], requires_grad=True) for sel in (mask, ~mask)]
    opt = torch.optim.AdamW([{"params": [groups[0]], "weight_decay": config["weight_decay"]},
                             {"params": [groups[1]], "weight_decay": 0.0}],
                            lr=LRS[0], betas=config["betas"], eps=config["eps"])
    for grad, lr in zip(grads, LRS):
        for group, tensor, sel in zip(opt.param_groups, groups, (mask, ~mask)):
            group["lr"] = lr
            tensor.grad = torch.tensor(grad[sel])
        opt.step()
    ours = run_adamw(ops, params, mask, grads, LRS, **config)[-1][0]
    np.testing.assert_allclose(ours[mask], groups[0].detach().numpy(), rtol=1e-10)
    np.testing.assert_allclose(ours[~mask], groups[1].detach().numpy(), rtol=1e-10)


def test_weight_decay_only_on_masked_entries(ops):
    """With zero grads, masked-out entries stay bit-identical; masked-in ones shrink by exactly
    (1 - lr * wd) each step."""
    params, mask, _ = problem()
    p, g = params.copy(), np.zeros(N)
    opt = AdamW(p, g, mask, weight_decay=0.1, ops=ops)
    for lr in LRS:
        before = p.copy()
        opt.step(lr)
        np.testing.assert_array_equal(p[~mask], params[~mask])
        np.testing.assert_allclose(p[mask], before[mask] * (1 - lr * 0.1), rtol=1e-15, atol=0)


def test_state_dict_round_trip_continues_identically(ops):
    """Stop after 3 steps, copy the state out as a checkpoint would, load it into a new optimizer
    on copied params: the next 2 steps are bit-identical to the uninterrupted run."""
    params, mask, grads = problem()
    p, g = params.copy(), np.zeros(N)
    opt = AdamW(p, g, mask, ops=ops)
    for grad, lr in zip(grads[:3], LRS):
        g[...] = grad
        opt.step(lr)
    saved = {k: np.array(v, copy=True) for k, v in opt.state_dict().items()}
    p2, g2 = p.copy(), np.zeros(N)
    opt2 = AdamW(p2, g2, mask, ops=ops)
    opt2.load_state_dict(saved)
    assert opt2.t == 3
    for grad, lr in zip(grads[3:], LRS[3:]):
        g[...] = g2[...] = grad
        opt.step(lr)
        opt2.step(lr)
    np.testing.assert_array_equal(p2, p)
    np.testing.assert_array_equal(opt2.m, opt.m)
    np.testing.assert_array_equal(opt2.v, opt.v)


def test_adamw_float32_stays_float32(ops, strict):
    """float32 params and grads: params, m and v stay float32, no float64 on the way."""
    params, mask, grads = problem()
    p, g = strict(params.astype(np.float32)), strict(grads[0].astype(np.float32))
    opt = AdamW(p, g, mask, ops=ops)
    for lr in LRS[:2]:
        opt.step(lr)
    assert p.dtype == opt.m.dtype == opt.v.dtype == np.float32
    assert np.all(np.isfinite(p))


MAX_LR, MIN_LR, WARMUP, MAX_STEPS = 6e-4, 6e-5, 10, 110


@pytest.mark.parametrize("step, expected", [
    (0, MAX_LR / WARMUP),                            # warm-up start
    (4, MAX_LR * 5 / WARMUP),                        # during warm-up
    (WARMUP, MAX_LR),                                # warm-up end
    ((WARMUP + MAX_STEPS) // 2, (MAX_LR + MIN_LR) / 2),   # half-way through the cosine
    (MAX_STEPS, MIN_LR),                             # end
    (MAX_STEPS + 50, MIN_LR),                        # after the end
])
def test_lr_schedule(step, expected):
    """Linear warm-up then cosine decay to min_lr, then min_lr."""
    assert lr_at(step, MAX_LR, MIN_LR, WARMUP, MAX_STEPS) == pytest.approx(expected, rel=1e-12)


def test_lr_schedule_decays_monotonically():
    """No bumps: non-decreasing through warm-up, non-increasing after."""
    lrs = [lr_at(s, MAX_LR, MIN_LR, WARMUP, MAX_STEPS) for s in range(MAX_STEPS + 5)]
    assert all(a <= b for a, b in zip(lrs[:WARMUP], lrs[1:WARMUP + 1]))
    assert all(a >= b for a, b in zip(lrs[WARMUP:], lrs[WARMUP + 1:]))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_clip_grad_norm_clips_to_max_norm(strict, ops, dtype):
    """Above max_norm: returns the pre-clip norm and scales grads to norm max_norm, keeping
    their direction and dtype."""
    grads = strict(np.random.default_rng(0).standard_normal(1000).astype(dtype))
    original = grads.copy()
    norm = float(ops.clip_grad_norm(grads, 1.0))
    assert norm == pytest.approx(np.linalg.norm(original.astype(np.float64)), rel=1e-6)
    assert np.linalg.norm(grads.astype(np.float64)) == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(grads * norm, original, rtol=1e-5)
    assert grads.dtype == dtype


@pytest.mark.parametrize("max_norm", [100.0, 0.0, -1.0])
def test_clip_grad_norm_leaves_grads_alone(ops, max_norm):
    """Below max_norm, or with max_norm <= 0 (off): grads untouched, norm still returned."""
    grads = np.random.default_rng(0).standard_normal(1000)
    original = grads.copy()
    assert float(ops.clip_grad_norm(grads, max_norm)) == pytest.approx(np.linalg.norm(original), rel=1e-12)
    np.testing.assert_array_equal(grads, original)


def test_threaded_adamw_equals_the_single_threaded_update():
    """The fast update split over threads changes nothing: every element is updated once."""
    rng = np.random.default_rng(11)
    n = 3 * CHUNK + 123                                    # several chunks and a ragged end
    mask = rng.random(n) < 0.5
    start = rng.standard_normal(n).astype(np.float32)
    grads = rng.standard_normal(n).astype(np.float32)
    runs = []
    for threads in (1, 3):
        p = start.copy()
        opt = AdamW(p, grads, mask, weight_decay=0.1, ops=kernels("cpu", "fast", threads=threads))
        for _ in range(3):
            opt.step(1e-2)
        runs.append((p, opt.m, opt.v))
    for single, threaded in zip(*runs):
        np.testing.assert_array_equal(single, threaded)


@pytest.mark.parametrize("max_norm", [0.0, 1.0, 1e9])
def test_clip_grad_norm_of_a_slice_clips_by_the_whole_gradient(ops, max_norm):
    """ZeRO's clipping: a slice whose squares total() sums over the slices' holders (here two
    equal slices: total doubles them) is scaled exactly as the whole buffer would be."""
    half = np.random.default_rng(3).standard_normal(1001) * 0.1
    whole, piece = np.concatenate([half, half]), half.copy()
    norm_whole = float(ops.clip_grad_norm(whole, max_norm))
    norm_piece = float(ops.clip_grad_norm(piece, max_norm, total=lambda squares: squares * 2))
    assert norm_piece == pytest.approx(norm_whole, rel=1e-12)
    np.testing.assert_allclose(piece, whole[:1001], rtol=1e-12)

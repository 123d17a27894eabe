"""The CUDA path, proven without a GPU: under the strict CuPy stand-in (tests/support/cupy_standin),
every fast CUDA op equals its reference pair, the model and a training step equal the CPU
path's, and a GPT-2-shaped step keeps its launch, sync and transfer budgets.

The stand-in runs each custom kernel through its NumPy twin (tests/support/cupy_standin/twins.py)
and each cuBLAS call through NumPy, counting them; launch counts depend on the number of
layers, never on the widths or the batch, so the budgets are checked on narrow models with
GPT-2's depth and context (12 layers, T = 1024) and asserted to be width-independent.
"""
from pathlib import Path

import numpy as np
import pytest

from gpt.config import GPTConfig
from gpt.model import GPT, buffer_size, parameter_shapes, tensor_views
from minigrad import AdamW, Backend, kernels
from minigrad.backend import _probe_cuda

# The launch budgets of a GPT-2-shaped step (12 layers, T = 1024), as docs/gpu.md states them.
LAUNCHES_PER_LAYER = 50
LAUNCHES_PER_STEP = 650
OPTIMIZER_LAUNCHES = 6


@pytest.fixture(params=["standin", "gpu"])
def device(request):
    """'standin' (every machine), or 'gpu': real CuPy on this machine's GPU, when it has one."""
    if request.param == "standin":
        request.getfixturevalue("standin")
    elif not _probe_cuda()[0]:
        pytest.skip("no CUDA GPU here; the stand-in runs the same test")
    return request.param


def cuda_model(config, dtype="float64", seed=0):
    backend = Backend("cuda", dtype)
    return GPT(config, backend, seed=seed, ops=kernels("cuda", "fast"))


def batch(config, B, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, config.vocab_size, (2, B, config.block_size))


# ----------------------------------------------------------------------------- kernels


def test_every_cuda_op_equals_its_reference(device):
    """minigrad.cuda's self-test cases: every op's outputs and gradients equal the reference
    pair's, run on the same device, in float64, float32 and float32 with TF32 products (the
    stand-in's cuBLAS rounds their operands as tensor cores do)."""
    from minigrad.cuda import cuda_ops, selftest
    rows = selftest.results(cuda_ops())
    assert [(name, check) for name, check, *_ in rows] == [
        (case.__name__[5:], check) for case in selftest.CASES for check in selftest.CHECKS
        if check != "float32+tf32" or case in selftest.TF32_CASES]
    # under the stand-in, float64 differs by rounding alone and float32 by the order of sums
    # (the largest: the optimizer's, 5e-7 of the tensor's scale)
    strict = {"float64": 1e-12, "float32": 1e-5} if device == "standin" else {}
    for name, check, error, tolerance, ok, message in rows:
        assert ok and error <= strict.get(check, tolerance), f"{name} {check}: {error} {message}"


def test_the_tf32_check_sees_tf32_and_the_others_do_not(standin):
    """The float32 checks run with TF32 off and the TF32 check with it on, whatever the mode
    before (which is restored): the products' compute types say so."""
    from cupy_backends.cuda.libs import cublas

    from minigrad.cuda import cuda_ops, gemm, selftest
    from minigrad.ops import reference_ops
    ops, reference = cuda_ops(), reference_ops()
    for check, (dtype, tf32, _) in selftest.CHECKS.items():
        for before in (True, False):
            gemm.ALLOW_TF32 = before
            with standin.counting() as counts:
                error, message = selftest.run_case(selftest.case_linear, ops, reference, dtype, tf32)
            assert gemm.ALLOW_TF32 is before and error <= selftest.CHECKS[check][2], message
            ours = {call.compute_type for call in counts.gemm_log if "gemmEx" in call.function}
            expected = {np.float64: cublas.CUBLAS_COMPUTE_64F}.get(dtype, cublas.CUBLAS_COMPUTE_32F_FAST_TF32
                                                                    if tf32 else cublas.CUBLAS_COMPUTE_32F_PEDANTIC)
            assert expected in ours and (tf32 or cublas.CUBLAS_COMPUTE_32F_FAST_TF32 not in ours), (check, ours)


def _nan_gelu(gelu_forward):
    def forward(x):
        out, cache = gelu_forward(x)
        return out * float("nan"), cache
    return forward


def _nan_dweight(layernorm_backward):
    def backward(dout, cache, dweight, dbias):
        dx = layernorm_backward(dout, cache, dweight, dbias)
        dweight.fill(float("nan"))
        return dx
    return backward


@pytest.mark.parametrize("case, op, broken", [("gelu_dropout", "gelu_forward", _nan_gelu),
                                              ("layernorm", "layernorm_backward", _nan_dweight)])
def test_a_kernel_that_returns_nan_fails_the_self_test(standin, capsys, monkeypatch, tmp_path, case, op, broken):
    """NaN where the reference is finite is a failure, never an error of 0: a GELU that
    returns NaN everywhere, a LayerNorm backward that fills dweight with NaN."""
    from minigrad.cuda import cuda_ops, selftest
    ops = cuda_ops()
    ops[op] = broken(ops[op])
    rows = {(name, check): (error, ok, message) for name, check, error, _, ok, message in selftest.results(ops)}
    for check in ("float64", "float32"):
        error, ok, message = rows[case, check]
        assert not ok and error == float("inf") and "non-finite" in message
    assert all(ok for (name, _), (_, ok, _) in rows.items() if name != case)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert op in selftest.failing_ops(ops) and "non-finite" in capsys.readouterr().err


@pytest.mark.parametrize("tf32", [True, False])
def test_the_tf32_mode_holds_through_the_first_use_self_test(standin, monkeypatch, tmp_path, tf32):
    """kernels('cuda', 'fast', tf32=False) runs the self-test (a fresh cache) and still
    multiplies in full float32 afterwards; tf32=True uses TF32."""
    from cupy_backends.cuda.libs import cublas
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    config = GPTConfig(n_layer=1, n_head=2, n_embd=8, block_size=4, vocab_size=11)
    model = GPT(config, Backend("cuda", "float32"), ops=kernels("cuda", "fast", tf32=tf32))
    assert (tmp_path / "minigrad" / "cuda_selftest.json").exists()
    import cupy
    x, y = (cupy.asarray(a) for a in batch(config, 2))
    with standin.counting() as counts:
        model.forward(x, y)
    expected = cublas.CUBLAS_COMPUTE_32F_FAST_TF32 if tf32 else cublas.CUBLAS_COMPUTE_32F_PEDANTIC
    assert {call.compute_type for call in counts.gemm_log} == {expected}


def test_the_verdict_is_cached_per_tf32_mode_versions_and_code(standin, tmp_path):
    """The cache key names the TF32 mode, the CUDA runtime, driver and cuBLAS versions, and a
    hash of minigrad's code that changes when the self-test itself changes."""
    import shutil

    from minigrad.cuda import selftest
    on, off = selftest.cache_key(True), selftest.cache_key(False)
    assert on != off and "tf32 on" in on and "tf32 off" in off
    assert all(part in on for part in ("cuda runtime 12090", "driver 12090", "cublas 120900", selftest.code_hash()))
    same, changed = tmp_path / "same", tmp_path / "changed"
    for copy in (same, changed):
        shutil.copytree(Path(selftest.__file__).parents[1], copy, ignore=shutil.ignore_patterns("__pycache__"))
    with open(changed / "cuda" / "selftest.py", "a") as f:
        f.write("\n# a changed self-test\n")
    assert selftest.code_hash(same) == selftest.code_hash() != selftest.code_hash(changed)


def test_cuda_fast_ops_are_the_cuda_kernels(standin):
    """kernels('cuda', 'fast') hands out every op, each from minigrad/cuda/."""
    from minigrad import OP_NAMES
    ops = kernels("cuda", "fast")
    assert all(getattr(ops, name).__module__.startswith("minigrad.cuda.") for name in OP_NAMES)


@pytest.mark.parametrize("kind", ["fast", "reference"])
@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_cuda_model_equals_the_cpu_model(device, dropout, kind):
    """Forward, backward and two AdamW steps on CUDA (its kernels, or the reference ops on
    CuPy) equal the CPU fast path in float64, dropout included: both draw the same masks."""
    import cupy
    config = GPTConfig(n_layer=2, n_head=2, n_embd=12, block_size=9, vocab_size=37, dropout=dropout)
    cpu = GPT(config, Backend("cpu", "float64"), seed=3, ops=kernels("cpu", "fast"))
    gpu = GPT(config, Backend("cuda", "float64"), seed=3, ops=kernels("cuda", kind))
    x, y = batch(config, 3)
    results = []
    for model, to_device in ((cpu, np.asarray), (gpu, cupy.asarray)):
        opt = AdamW(model.params, model.grads, model.decay_mask(), ops=model.ops)
        for step in range(2):
            model.zero_grad()
            _, loss = model.forward(to_device(x), to_device(y), train=True, dropout_seed=step + 5)
            model.backward()
            norm = model.ops.clip_grad_norm(model.grads, 0.5)
            opt.step(1e-3)
        results.append([float(loss), float(norm), model.backend.to_host(model.grads),
                        model.backend.to_host(model.params)])
    for ours, theirs in zip(results[1], results[0]):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- budgets


def step_counts(standin, config, B, dropout_seed=1):
    """(launches of forward + backward, syncs, host->device copies) of one micro-step after
    a warm-up step, as the trainer runs it (gpt.parallel.workers.DataParallel on one device)."""
    from gpt.parallel.workers import DataParallel
    model = cuda_model(config, dtype="float32")
    workers = DataParallel(model, 1)
    x, y = batch(config, B)
    workers.forward_backward(x, y, dropout_seed=dropout_seed)
    with standin.counting() as counts:
        workers.forward_backward(x, y, dropout_seed=dropout_seed)
    return counts


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_a_gpt2_shaped_step_keeps_its_launch_budget(standin, dropout):
    """12 layers at T = 1024: at most 50 launches a layer and 650 a step; no host sync; one
    host-to-device copy (x and y together). The counts do not depend on B or the width."""
    def config(n_layer, n_embd=16):
        return GPTConfig(n_layer=n_layer, n_head=2, n_embd=n_embd, block_size=1024, vocab_size=64, dropout=dropout)
    step = step_counts(standin, config(12), B=1)
    one_layer_less = step_counts(standin, config(11), B=1)
    per_layer = step.launches - one_layer_less.launches
    assert per_layer <= LAUNCHES_PER_LAYER, per_layer
    assert step.launches <= LAUNCHES_PER_STEP, step.launches
    assert (step.syncs, step.d2h, step.h2d) == (0, 0, 1)
    assert step_counts(standin, config(12, n_embd=32), B=2).launches == step.launches


def test_clipping_and_adamw_on_a_gpt2_sized_buffer(standin):
    """Clipping and the AdamW step over GPT-2 124M's flat buffer: at most 6 launches, no sync."""
    import cupy
    config = GPTConfig.preset("gpt2")
    n = buffer_size(config)
    mask = np.zeros(n, dtype=bool)
    for name, view in tensor_views(mask, parameter_shapes(config)).items():
        view[...] = view.ndim == 2
    params, grads = cupy.zeros(n, dtype=cupy.float32), cupy.ones(n, dtype=cupy.float32)
    ops = kernels("cuda", "fast")
    optimizer = AdamW(params, grads, cupy.asarray(mask), ops=ops)
    optimizer.step(1e-3)                                    # uploads the decay table once
    with standin.counting() as counts:
        ops.clip_grad_norm(grads, 1.0)
        optimizer.step(1e-3)
    assert counts.launches <= OPTIMIZER_LAUNCHES, counts.by_site
    assert (counts.syncs, counts.h2d, counts.d2h) == (0, 0, 0)


def test_the_training_step_waits_for_nothing(standin, tmp_path):
    """train.py's whole step (grad accumulation 2, clipping, AdamW) under the stand-in: no
    device sync, one host-to-device copy per micro-batch; the loss and norm are read back
    only at --log-interval."""
    import train
    cfg = train.TrainConfig(device="cuda", preset="tiny", n_embd=16, n_head=2, block_size=32, batch_size=2,
                            grad_accum=2, out_dir=str(tmp_path), sample_tokens=0)
    trainer = train.Trainer(cfg)
    trainer.train_step()
    with standin.counting() as counts:
        loss, _, norm = trainer.train_step()
    assert (counts.syncs, counts.d2h, counts.h2d) == (0, 0, 2), counts.by_site
    assert np.isfinite(float(loss)) and np.isfinite(float(norm))


@pytest.mark.parametrize("flags", [[], ["--no-tf32"]])
def test_train_py_no_tf32_multiplies_in_full_float32(standin, monkeypatch, tmp_path, flags):
    """train.py --no-tf32 (a fresh self-test cache, so the self-test runs first): every float32
    product of a training step in full float32; without it, all but the bias gradients' (full
    float32 by design) on TF32."""
    from cupy_backends.cuda.libs import cublas

    import train
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cfg, _ = train.resolve_options(["--device", "cuda", "--preset", "tiny", "--n-embd", "16", "--n-head", "2",
                                    "--block-size", "16", "--batch-size", "2", "--sample-tokens", "0",
                                    "--out-dir", str(tmp_path / "run"), *flags])
    trainer = train.Trainer(cfg)
    with standin.counting() as counts:
        trainer.train_step()
    full, tf32 = cublas.CUBLAS_COMPUTE_32F_PEDANTIC, cublas.CUBLAS_COMPUTE_32F_FAST_TF32
    assert {call.compute_type for call in counts.gemm_log} == ({full} if flags else {full, tf32})


def test_the_cuda_clip_of_a_slice_clips_by_the_whole_gradient(standin):
    """The CUDA clip op with total (ZeRO): the partial sums of squares go through total (here
    doubled, as two equal slices on two ranks would sum them), then decide the scale."""
    import cupy
    ops = kernels("cuda", "fast")
    half = np.random.default_rng(3).standard_normal(300_001) * 0.01
    whole, piece = cupy.asarray(np.concatenate([half, half])), cupy.asarray(half)
    norm_whole = float(ops.clip_grad_norm(whole, 1.0))
    norm_piece = float(ops.clip_grad_norm(piece, 1.0, total=lambda partial: partial * 2))
    assert norm_piece == pytest.approx(norm_whole, rel=1e-12) and norm_whole > 1.0
    np.testing.assert_allclose(cupy.asnumpy(piece), cupy.asnumpy(whole[:300_001]), rtol=1e-12)


KV_LAUNCHES_PER_LAYER, KV_LAUNCHES_FIXED = 16, 3


def test_kv_cache_decoding_launches_per_token(standin):
    """Generating one token with the KV cache launches 16 kernels per layer and 3 more (the
    embedding, ln_f and the head), as docs/gpu.md states: the cache is written and read in
    place (no copies), and the logits come back in one copy."""
    import cupy

    from gpt.generate import KVCache, forward_cached
    for n_layer in (2, 3):
        config = GPTConfig(n_layer=n_layer, n_head=2, n_embd=16, block_size=32, vocab_size=64)
        model = cuda_model(config, dtype="float32")
        cache = KVCache(model, batch_size=1)
        forward_cached(model, cupy.asarray(np.array([[1, 2, 3]])), cache)
        with standin.counting() as counts:
            logits = forward_cached(model, cupy.asarray(np.array([[4]])), cache)
            model.backend.to_host(logits)
        assert counts.launches == KV_LAUNCHES_PER_LAYER * n_layer + KV_LAUNCHES_FIXED, counts.by_site
        assert (counts.h2d, counts.d2h) == (1, 1)


def test_a_kernel_that_fails_to_compile_falls_back_to_the_reference(standin, capsys, monkeypatch, tmp_path):
    """A compile error in the GELU kernels: one warning line naming them, and the GELU and
    dropout ops (their self-test case) are the reference pairs; the others stay fast."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    standin.fail_compile("gelu_forward")
    ops = kernels("cuda", "fast")
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "gelu_dropout" in warnings[0] and "CompileException" in warnings[0]
    assert ops.gelu_forward.__module__ == "minigrad.gelu" and ops.dropout_forward.__module__ == "minigrad.dropout"
    assert ops.layernorm_forward.__module__ == "minigrad.cuda.layernorm"


def test_a_kernel_that_disagrees_with_its_reference_is_replaced(standin, capsys, monkeypatch, tmp_path):
    """A wrong bias kernel (here its twin) fails the linear case: warned once, linear falls
    back; the verdict is cached per device and kernel source, so the next process is silent."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    add_bias = standin.TWINS["add_bias"]
    monkeypatch.setitem(standin.TWINS, "add_bias",
                        lambda out, *args, **kw: add_bias(out, *args, **kw) or out.__imul__(2))
    ops = kernels("cuda", "fast")
    err = capsys.readouterr().err
    assert "the linear kernels fail their self-test" in err and "max error" in err
    assert ops.linear_forward.__module__ == "minigrad.linear"
    assert (tmp_path / "minigrad" / "cuda_selftest.json").exists()

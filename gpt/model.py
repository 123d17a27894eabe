"""GPT-2, exactly: parameter layout, initialization, forward and backward.

    x = wte[idx] + wpe[pos]                                  embeddings, then dropout
    for each of the L blocks (pre-LayerNorm, residual stream x):
        x = x + dropout(attn(ln_1(x)))                       causal multi-head attention
        x = x + dropout(c_proj(gelu(c_fc(ln_2(x)))))         MLP, 4C wide
    logits = ln_f(x) @ wte^T                                 head tied to the token embedding
    loss = cross_entropy(logits, targets)

All parameters live in one flat buffer (`params`), all gradients in another (`grads`); every
named tensor is a view into them, named and shaped as in Hugging Face's GPT-2 state dict.
`backward()` calls the minigrad backward functions in exactly the reverse order of forward.
"""
import math

import numpy as np

from minigrad import kernels
from minigrad.dropout import site_seed

from .config import GPTConfig


def parameter_shapes(cfg: GPTConfig):
    """[(name, shape)] in Hugging Face GPT-2 order. wte has padded_vocab_size rows."""
    C, L = cfg.n_embd, cfg.n_layer
    shapes = [("wte.weight", (cfg.padded_vocab_size, C)), ("wpe.weight", (cfg.block_size, C))]
    for i in range(L):
        h = f"h.{i}."
        shapes += [
            (h + "ln_1.weight", (C,)), (h + "ln_1.bias", (C,)),
            (h + "attn.c_attn.weight", (C, 3 * C)), (h + "attn.c_attn.bias", (3 * C,)),
            (h + "attn.c_proj.weight", (C, C)), (h + "attn.c_proj.bias", (C,)),
            (h + "ln_2.weight", (C,)), (h + "ln_2.bias", (C,)),
            (h + "mlp.c_fc.weight", (C, 4 * C)), (h + "mlp.c_fc.bias", (4 * C,)),
            (h + "mlp.c_proj.weight", (4 * C, C)), (h + "mlp.c_proj.bias", (C,)),
        ]
    shapes += [("ln_f.weight", (C,)), ("ln_f.bias", (C,))]
    return shapes


def buffer_size(cfg: GPTConfig):
    """Elements of the flat parameter buffer (the vocabulary padding rows included). Every
    block has the same tensors, so a one-block model is counted and its block repeated: the
    count of a config read from a file costs nothing per layer, whatever n_layer it claims."""
    one = parameter_shapes(cfg.replace(n_layer=1))
    block = sum(math.prod(shape) for name, shape in one if name.startswith("h.0."))
    return sum(math.prod(shape) for _, shape in one) + (cfg.n_layer - 1) * block


def count_parameters(cfg: GPTConfig):
    """Parameters of the real model: every tensor, without the vocabulary padding rows."""
    return buffer_size(cfg) - (cfg.padded_vocab_size - cfg.vocab_size) * cfg.n_embd


def tensor_views(flat, shapes):
    """{name: view of `flat`} following `shapes` back to back."""
    views, offset = {}, 0
    for name, shape in shapes:
        n = math.prod(shape)
        views[name] = flat[offset:offset + n].reshape(shape)
        offset += n
    return views


class GPT:
    """A GPT-2 model on a minigrad Backend (NumPy or CuPy), in the backend's dtype.

    ops: the layer implementations (minigrad.kernels; default the backend's fast ones).
    params, grads: flat buffers of buffer_size(config) elements to hold the parameters and
    their gradients (default: new zeros). params is initialized from `seed`; seed=None keeps
    the values it holds (a second model over the same parameters).
    """

    def __init__(self, config: GPTConfig, backend, seed=0, ops=None, params=None, grads=None):
        config.validate()
        self.config, self.backend = config, backend
        self.ops = ops if ops is not None else kernels(backend.name, "fast")
        self.shapes = parameter_shapes(config)
        n = buffer_size(config)
        for name, buffer in (("params", params), ("grads", grads)):
            if buffer is not None and (buffer.shape != (n,) or buffer.dtype != backend.dtype):
                raise ValueError(f"{name} must be a flat {np.dtype(backend.dtype).name} buffer of {n} "
                                 f"elements, got {buffer.dtype} {buffer.shape}")
        self.params = backend.xp.zeros(n, dtype=backend.dtype) if params is None else params  # (n,)
        self.grads = backend.xp.zeros(n, dtype=backend.dtype) if grads is None else grads     # (n,)
        self.p = tensor_views(self.params, self.shapes)          # name -> parameter view
        self.g = tensor_views(self.grads, self.shapes)           # name -> gradient view
        if seed is not None:
            self._init_weights(seed)
        self._cache = None

    # ----------------------------------------------------------------- parameters

    def _init_weights(self, seed):
        """GPT-2 init: N(0, 0.02) weights, residual projections scaled by 1/sqrt(2L), zero
        biases, LayerNorm weight 1. Drawn on the host so every device gets the same model."""
        cfg = self.config
        rng = np.random.default_rng(seed)
        resid_std = 0.02 / math.sqrt(2 * cfg.n_layer)
        for name, shape in self.shapes:
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                value = np.ones(shape)
            elif len(shape) == 1:
                value = np.zeros(shape)
            else:
                std = resid_std if name.endswith("c_proj.weight") else 0.02
                value = rng.normal(0.0, std, size=shape)
            if name == "wte.weight":
                value[cfg.vocab_size:] = 0.0        # padding rows: never used, stay zero
            self.p[name][...] = self.backend.asarray(value, dtype=self.backend.dtype)

    @property
    def num_params(self):
        """Parameters of the real model (the vocabulary padding rows not counted)."""
        return count_parameters(self.config)

    def decay_mask(self):
        """Flat 0/1 mask: 1 on 2-D tensors (matrices and embeddings), where AdamW's weight
        decay applies; 0 on biases and LayerNorm parameters."""
        mask = self.backend.xp.zeros(self.params.size, dtype=bool)
        for name, view in tensor_views(mask, self.shapes).items():
            view[...] = len(self.p[name].shape) == 2
        return mask

    def state_dict(self):
        """{name: host numpy array} of the real model (vocabulary padding dropped)."""
        out = {name: self.backend.to_host(v) for name, v in self.p.items()}
        out["wte.weight"] = out["wte.weight"][: self.config.vocab_size]
        return out

    def load_state_dict(self, state):
        """Copy {name: array} into the parameter views (shapes must match; wte may omit padding)."""
        for name, view in self.p.items():
            value = np.asarray(state[name])
            if name == "wte.weight":
                view[: value.shape[0]] = self.backend.asarray(value, dtype=view.dtype)
                view[value.shape[0]:] = 0.0
            else:
                view[...] = self.backend.asarray(value, dtype=view.dtype)

    def __repr__(self):
        c = self.config
        return (f"GPT(n_layer={c.n_layer}, n_head={c.n_head}, n_embd={c.n_embd}, block_size={c.block_size}, "
                f"vocab_size={c.vocab_size}, dropout={c.dropout}): {self.num_params:,} parameters")

    # ----------------------------------------------------------------- forward / backward

    def forward(self, idx, targets=None, train=False, dropout_seed=0, ignore_index=-1, keep_cache=True,
                return_logits=True, first_row=0):
        """idx (B, T) int token ids on the model's device; targets (B, T) or None.

        Returns (logits (B, T, padded_vocab_size), loss: a 0-d array on the model's device, or
        None). The loss stays on the device (float(loss) reads it back, a device sync on a
        GPU). With targets and keep_cache, the activations needed by backward() are kept.
        train=True enables dropout, with masks derived from the integer `dropout_seed` and the
        place of idx's rows in the whole batch (first_row: the batch row of idx[0]; a shard of a
        batch draws the masks the whole batch would, minigrad.dropout). return_logits=False (with
        targets) returns None for the logits and lets the loss reuse their memory."""
        ops, cfg = self.ops, self.config
        need_grad = targets is not None and keep_cache
        x, c = self.transformer_forward(idx, train, dropout_seed, keep_grad=need_grad, first_row=first_row)
        logits, c["head"] = ops.linear_forward(x, self.p["wte.weight"].T, None)  # (B, T, Vp), tied head
        if targets is None:
            self._cache = None
            return logits, None
        loss, c["loss"] = ops.cross_entropy_forward(logits.copy() if return_logits else logits,
                                                    targets, ignore_index, cfg.vocab_size)
        self._cache = c if keep_cache else None
        return (logits if return_logits else None), loss

    def transformer_forward(self, idx, train=False, dropout_seed=0, keep_grad=True, kv_cache=None, first_row=0):
        """Embeddings, the L blocks and ln_f: idx (B, T) -> (x (B, T, C), caches for backward).

        Dropout site n (0: embeddings; 3i + 1, 3i + 2, 3i + 3: block i's attention
        probabilities, attention output and MLP output) uses site_seed(dropout_seed, n), over the
        flat indices of idx's rows in the whole batch (first_row: the batch row of idx[0]).

        kv_cache (a gpt.generate.KVCache, inference only): idx holds the positions
        kv_cache.length .. kv_cache.length + T - 1, and every block's attention reads and
        extends the cache; the positions before come from it instead of being recomputed."""
        ops, cfg, p = self.ops, self.config, self.p
        B, T = idx.shape
        t0 = 0 if kv_cache is None else kv_cache.length
        if t0 + T > cfg.block_size:
            what = f"sequence length {T} exceeds" if kv_cache is None else f"{t0} cached + {T} new tokens exceed"
            raise ValueError(f"{what} block_size {cfg.block_size}")
        drop = cfg.dropout if train else 0.0
        seed = lambda site: site_seed(dropout_seed, site)                  # noqa: E731
        c = {"blocks": []}                                                  # caches for backward

        x, c["emb"] = ops.embedding_forward(idx, p["wte.weight"], p["wpe.weight"][t0:])  # (B, T, C)
        x, c["emb_drop"] = ops.dropout_forward(x, drop, seed(0), first_row=first_row)
        for i in range(cfg.n_layer):
            h, bc = f"h.{i}.", {}
            kv = None if kv_cache is None else (kv_cache.k[i], kv_cache.v[i])
            a, bc["ln_1"] = ops.layernorm_forward(x, p[h + "ln_1.weight"], p[h + "ln_1.bias"])
            a, bc["attn"] = ops.attention_forward(
                a, p[h + "attn.c_attn.weight"], p[h + "attn.c_attn.bias"],
                p[h + "attn.c_proj.weight"], p[h + "attn.c_proj.bias"], cfg.n_head, drop,
                seed(3 * i + 1), kv_cache=kv, t0=t0, first_row=first_row)
            a, bc["attn_drop"] = ops.dropout_forward(a, drop, seed(3 * i + 2), first_row=first_row)
            x, m, bc["ln_2"] = ops.residual_layernorm_forward(              # x = x + a (residual),
                x, a, p[h + "ln_2.weight"], p[h + "ln_2.bias"])             # m = ln_2(x)
            m, bc["fc"] = ops.linear_forward(m, p[h + "mlp.c_fc.weight"], p[h + "mlp.c_fc.bias"])  # (B, T, 4C)
            m, bc["gelu"] = ops.gelu_forward(m, keep_grad=keep_grad)
            m, bc["proj"] = ops.linear_forward(m, p[h + "mlp.c_proj.weight"], p[h + "mlp.c_proj.bias"])
            m, bc["mlp_drop"] = ops.dropout_forward(m, drop, seed(3 * i + 3), first_row=first_row)
            x = x + m                                                       # residual
            c["blocks"].append(bc)
        x, c["ln_f"] = ops.layernorm_forward(x, p["ln_f.weight"], p["ln_f.bias"])
        if kv_cache is not None:
            kv_cache.length = t0 + T
        return x, c

    def backward(self, dloss=1.0):
        """Add d(dloss * loss)/d params into self.grads (call zero_grad() between steps)."""
        if self._cache is None:
            raise RuntimeError("backward() needs a forward() with targets first")
        c, g, cfg, ops = self._cache, self.g, self.config, self.ops
        self._cache = None                                   # the loss cache is consumed below

        dlogits = ops.cross_entropy_backward(dloss, c["loss"])                  # (B, T, Vp)
        dx = ops.linear_backward(dlogits, c["head"], g["wte.weight"].T, None)   # tied: into dwte
        dx = ops.layernorm_backward(dx, c["ln_f"], g["ln_f.weight"], g["ln_f.bias"])
        for i in reversed(range(cfg.n_layer)):
            h, bc = f"h.{i}.", c["blocks"][i]
            dm = ops.dropout_backward(dx, bc["mlp_drop"])                       # MLP branch
            dm = ops.linear_backward(dm, bc["proj"], g[h + "mlp.c_proj.weight"], g[h + "mlp.c_proj.bias"])
            dm = ops.gelu_backward(dm, bc["gelu"])
            dm = ops.linear_backward(dm, bc["fc"], g[h + "mlp.c_fc.weight"], g[h + "mlp.c_fc.bias"])
            dx = dx + ops.layernorm_backward(dm, bc["ln_2"], g[h + "ln_2.weight"], g[h + "ln_2.bias"])
            da = ops.dropout_backward(dx, bc["attn_drop"])                      # attention branch
            da = ops.attention_backward(
                da, bc["attn"], g[h + "attn.c_attn.weight"], g[h + "attn.c_attn.bias"],
                g[h + "attn.c_proj.weight"], g[h + "attn.c_proj.bias"])
            dx = dx + ops.layernorm_backward(da, bc["ln_1"], g[h + "ln_1.weight"], g[h + "ln_1.bias"])
        dx = ops.dropout_backward(dx, c["emb_drop"])
        ops.embedding_backward(dx, c["emb"], g["wte.weight"], g["wpe.weight"])

    def zero_grad(self):
        self.grads[...] = 0.0

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
import copy
import math
import mmap

import numpy as np

from minigrad import (
    attention_backward,
    attention_forward,
    cross_entropy_backward,
    cross_entropy_forward,
    dropout_backward,
    dropout_forward,
    embedding_backward,
    embedding_forward,
    gelu_backward,
    gelu_forward,
    layernorm_backward,
    layernorm_forward,
    linear_backward,
    linear_forward,
)

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


def count_parameters(cfg: GPTConfig):
    """Parameters of the real model: every tensor, without the vocabulary padding rows."""
    padding = (cfg.padded_vocab_size - cfg.vocab_size) * cfg.n_embd
    return sum(math.prod(shape) for _, shape in parameter_shapes(cfg)) - padding


def _views(flat, shapes):
    """{name: view of `flat`} following `shapes` back to back."""
    views, offset = {}, 0
    for name, shape in shapes:
        n = math.prod(shape)
        views[name] = flat[offset:offset + n].reshape(shape)
        offset += n
    return views


def _shared_copy(a):
    """A copy of the host array `a` in anonymous shared memory (inherited by forked processes)."""
    shared = np.frombuffer(mmap.mmap(-1, max(a.nbytes, 1)), dtype=a.dtype, count=a.size)
    shared[...] = a
    return shared


class GPT:
    """A GPT-2 model on a minigrad Backend (NumPy or CuPy), in the backend's dtype."""

    def __init__(self, config: GPTConfig, backend, seed=0):
        config.validate()
        self.config, self.backend = config, backend
        xp = backend.xp
        self.shapes = parameter_shapes(config)
        n_total = sum(math.prod(s) for _, s in self.shapes)
        self.params = xp.zeros(n_total, dtype=backend.dtype)     # every parameter, one buffer
        self.grads = xp.zeros(n_total, dtype=backend.dtype)      # d loss / d params, same layout
        self.p = _views(self.params, self.shapes)                # name -> parameter view
        self.g = _views(self.grads, self.shapes)                 # name -> gradient view
        self._shared = False                                     # see share_memory()
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
        for name, view in _views(mask, self.shapes).items():
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

    def share_memory(self):
        """Move params and grads into shared memory (CPU): processes forked after this see the
        same parameters, and replicas made after it get shared gradient buffers, which the
        data-parallel workers of gpt/parallel.py use. Values are kept; views are remade, so
        call it before handing params or grads to an optimizer."""
        self._shared = True
        self.params = _shared_copy(self.params)
        self.grads = _shared_copy(self.grads)
        self.p = _views(self.params, self.shapes)
        self.g = _views(self.grads, self.shapes)

    def replica(self):
        """A twin sharing this model's parameters, with its own gradient buffer (in shared
        memory after share_memory()) and activation cache: one data-parallel worker."""
        twin = copy.copy(self)
        zeros = self.backend.xp.zeros_like(self.grads)
        twin.grads = _shared_copy(zeros) if self._shared else zeros
        twin.g = _views(twin.grads, self.shapes)
        twin._cache = None
        return twin

    def __repr__(self):
        c = self.config
        return (f"GPT(n_layer={c.n_layer}, n_head={c.n_head}, n_embd={c.n_embd}, block_size={c.block_size}, "
                f"vocab_size={c.vocab_size}, dropout={c.dropout}): {self.num_params:,} parameters")

    # ----------------------------------------------------------------- forward / backward

    def forward(self, idx, targets=None, train=False, rng=None, ignore_index=-1, keep_cache=True,
                return_logits=True):
        """idx (B, T) int token ids on the model's device; targets (B, T) or None.

        Returns (logits (B, T, padded_vocab_size), loss as a Python float or None). With
        targets and keep_cache, the activations needed by backward() are kept. train=True
        enables dropout, drawing masks from `rng` (a Generator of the model's array module).
        return_logits=False (with targets) returns None for the logits and lets the loss reuse
        their memory."""
        cfg, p = self.config, self.p
        B, T = idx.shape
        if T > cfg.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {cfg.block_size}")
        drop = cfg.dropout if train else 0.0
        need_grad = targets is not None and keep_cache
        c = {"blocks": []}                                                  # caches for backward

        x, c["emb"] = embedding_forward(idx, p["wte.weight"], p["wpe.weight"])   # (B, T, C)
        x, c["emb_drop"] = dropout_forward(x, drop, rng)
        for i in range(cfg.n_layer):
            h, bc = f"h.{i}.", {}
            a, bc["ln_1"] = layernorm_forward(x, p[h + "ln_1.weight"], p[h + "ln_1.bias"])
            a, bc["attn"] = attention_forward(
                a, p[h + "attn.c_attn.weight"], p[h + "attn.c_attn.bias"],
                p[h + "attn.c_proj.weight"], p[h + "attn.c_proj.bias"], cfg.n_head, drop, rng)
            a, bc["attn_drop"] = dropout_forward(a, drop, rng)
            x = x + a                                                       # residual
            m, bc["ln_2"] = layernorm_forward(x, p[h + "ln_2.weight"], p[h + "ln_2.bias"])
            m, bc["fc"] = linear_forward(m, p[h + "mlp.c_fc.weight"], p[h + "mlp.c_fc.bias"])  # (B, T, 4C)
            m, bc["gelu"] = gelu_forward(m, keep_grad=need_grad)
            m, bc["proj"] = linear_forward(m, p[h + "mlp.c_proj.weight"], p[h + "mlp.c_proj.bias"])
            m, bc["mlp_drop"] = dropout_forward(m, drop, rng)
            x = x + m                                                       # residual
            c["blocks"].append(bc)
        x, c["ln_f"] = layernorm_forward(x, p["ln_f.weight"], p["ln_f.bias"])
        logits, c["head"] = linear_forward(x, p["wte.weight"].T, None)    # (B, T, Vp), tied head

        if targets is None:
            self._cache = None
            return logits, None
        loss, c["loss"] = cross_entropy_forward(logits, targets, ignore_index, cfg.vocab_size,
                                                overwrite_logits=not return_logits)
        self._cache = c if keep_cache else None
        return (logits if return_logits else None), float(loss)

    def backward(self, dloss=1.0):
        """Add d(dloss * loss)/d params into self.grads (call zero_grad() between steps)."""
        if self._cache is None:
            raise RuntimeError("backward() needs a forward() with targets first")
        c, g, cfg = self._cache, self.g, self.config
        self._cache = None                                   # the loss cache is consumed below

        dlogits = cross_entropy_backward(dloss, c["loss"])                  # (B, T, Vp)
        dx = linear_backward(dlogits, c["head"], g["wte.weight"].T, None)   # tied: into dwte
        dx = layernorm_backward(dx, c["ln_f"], g["ln_f.weight"], g["ln_f.bias"])
        for i in reversed(range(cfg.n_layer)):
            h, bc = f"h.{i}.", c["blocks"][i]
            dm = dropout_backward(dx, bc["mlp_drop"])                       # MLP branch
            dm = linear_backward(dm, bc["proj"], g[h + "mlp.c_proj.weight"], g[h + "mlp.c_proj.bias"])
            dm = gelu_backward(dm, bc["gelu"])
            dm = linear_backward(dm, bc["fc"], g[h + "mlp.c_fc.weight"], g[h + "mlp.c_fc.bias"])
            dx = dx + layernorm_backward(dm, bc["ln_2"], g[h + "ln_2.weight"], g[h + "ln_2.bias"])
            da = dropout_backward(dx, bc["attn_drop"])                      # attention branch
            da = attention_backward(
                da, bc["attn"], g[h + "attn.c_attn.weight"], g[h + "attn.c_attn.bias"],
                g[h + "attn.c_proj.weight"], g[h + "attn.c_proj.bias"])
            dx = dx + layernorm_backward(da, bc["ln_1"], g[h + "ln_1.weight"], g[h + "ln_1.bias"])
        dx = dropout_backward(dx, c["emb_drop"])
        embedding_backward(dx, c["emb"], g["wte.weight"], g["wpe.weight"])

    def zero_grad(self):
        self.grads[...] = 0.0

"""Train a GPT-2-style model on a text corpus.

    python train.py                       # byte-level model on the bundled tiny-shakespeare
    python train.py --data my.txt --preset small --max-steps 5000 --device cuda
    python train.py --resume              # continue the run in --out-dir

Every option is listed by `python train.py --help`.
"""
import argparse
import json
import math
import os
import signal
import sys
import time

import numpy as np

from gpt.cli import LineParser, UsageError, number, run_main

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.join(HERE, "data", "tiny_shakespeare.txt")

# Option defaults. The default run is a compact byte-level model that learns tiny-shakespeare
# in about three minutes on 2 CPU cores.
DEFAULTS = dict(
    data=DEFAULT_DATA, tokenizer="byte", preset="mini", device="auto", dtype="float32", seed=1337,
    batch_size=16, grad_accum=1, max_steps=1500, lr=2e-3, min_lr=2e-4, warmup_steps=100,
    weight_decay=0.1, beta1=0.9, beta2=0.99, grad_clip=1.0, eval_interval=250, eval_steps=20,
    val_fraction=0.1, sampling="random", target_loss=None, out_dir="out", resume=False,
    bpe_vocab=None, bpe_merges=None, local_vocab=False, show_window=False, init_from=None,
    workers=None, prompt="\n", sample_tokens=300, temperature=0.8, top_k=None, log_interval=10,
)
MODEL_FIELDS = ("n_layer", "n_head", "n_embd", "block_size", "dropout", "vocab_size")
# Options that define what is trained: a resumed run must not change them.
RUN_FIELDS = ("tokenizer", "bpe_vocab", "bpe_merges", "local_vocab", "seed", "batch_size", "grad_accum",
              "sampling", "val_fraction", "dtype")


# Argument types: argparse names the flag in its message.
POSITIVE_INT = number(int, lambda v: v > 0, "> 0")
NONNEG_INT = number(int, lambda v: v >= 0, ">= 0")
POSITIVE = number(float, lambda v: v > 0, "> 0")
NONNEG = number(float, lambda v: v >= 0, ">= 0")
FRACTION = number(float, lambda v: 0 <= v < 1, "in [0, 1)")


def build_parser():
    from gpt.config import PRESETS
    p = LineParser(prog="train.py", description="Train a GPT-2-style model with explicit NumPy/CuPy forward and backward passes.",
                   argument_default=argparse.SUPPRESS)
    d = DEFAULTS
    g = p.add_argument_group("data")
    g.add_argument("--data", help="text file or directory of text files (default: the bundled tiny-shakespeare)")
    g.add_argument("--tokenizer", choices=["byte", "gpt2"], help=f"byte: 256 byte ids; gpt2: GPT-2 BPE (default: {d['tokenizer']})")
    g.add_argument("--bpe-vocab", help="vocab.json (or encoder.json) of another BPE vocabulary; implies --tokenizer gpt2")
    g.add_argument("--bpe-merges", help="merges.txt (or vocab.bpe) that goes with --bpe-vocab")
    g.add_argument("--local-vocab", action="store_true", help="BPE: shrink the model's vocabulary to the ids the corpus uses")
    g.add_argument("--show-window", action="store_true", help="print the first training window (ids and text) and exit")
    g.add_argument("--val-fraction", type=FRACTION, help=f"last fraction of the corpus held out for validation (default: {d['val_fraction']})")
    g.add_argument("--sampling", choices=["random", "sequential"], help=f"random windows, or consecutive windows in order (default: {d['sampling']})")
    g = p.add_argument_group("model")
    g.add_argument("--preset", choices=list(PRESETS), help=f"model size; the flags below override its fields (default: {d['preset']})")
    g.add_argument("--n-layer", type=POSITIVE_INT, help="number of transformer blocks")
    g.add_argument("--n-head", type=POSITIVE_INT, help="attention heads per block")
    g.add_argument("--n-embd", type=POSITIVE_INT, help="embedding width C (divisible by --n-head)")
    g.add_argument("--block-size", type=POSITIVE_INT, help="context window T in tokens")
    g.add_argument("--dropout", type=FRACTION, help="dropout probability (default: 0)")
    g.add_argument("--vocab-size", type=POSITIVE_INT, help="output head size; at least the tokenizer's vocabulary (default: the tokenizer's)")
    g.add_argument("--init-from", metavar="HF_DIR", help="start from a Hugging Face GPT-2 directory (config.json + "
                   "model.safetensors); its architecture replaces --preset and the model flags except --dropout")
    g = p.add_argument_group("optimization")
    g.add_argument("--batch-size", type=POSITIVE_INT, help=f"sequences per micro-batch B (default: {d['batch_size']})")
    g.add_argument("--grad-accum", type=POSITIVE_INT, help=f"micro-batches per optimizer step (default: {d['grad_accum']})")
    g.add_argument("--max-steps", type=POSITIVE_INT, help=f"optimizer steps in the run (default: {d['max_steps']})")
    g.add_argument("--lr", type=POSITIVE, help=f"peak learning rate (default: {d['lr']})")
    g.add_argument("--min-lr", type=NONNEG, help=f"learning rate at the end of the cosine decay (default: {d['min_lr']})")
    g.add_argument("--warmup-steps", type=NONNEG_INT, help=f"steps of linear warm-up (default: {d['warmup_steps']})")
    g.add_argument("--weight-decay", type=NONNEG, help=f"AdamW decoupled weight decay on 2-D weights (default: {d['weight_decay']})")
    g.add_argument("--beta1", type=FRACTION, help=f"AdamW first-moment decay (default: {d['beta1']})")
    g.add_argument("--beta2", type=FRACTION, help=f"AdamW second-moment decay (default: {d['beta2']})")
    g.add_argument("--grad-clip", type=NONNEG, help=f"clip the global gradient norm to this; 0 turns clipping off (default: {d['grad_clip']})")
    g = p.add_argument_group("run")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], help=f"auto uses CUDA when CuPy finds a GPU (default: {d['device']})")
    g.add_argument("--dtype", choices=["float32", "float64"], help=f"floating-point type of parameters and activations (default: {d['dtype']})")
    g.add_argument("--workers", "--threads", type=POSITIVE_INT,
                   help="CPU worker processes, each training a slice of the batch (default: all cores)")
    g.add_argument("--seed", type=NONNEG_INT, help=f"seed for init, data order, dropout and samples (default: {d['seed']})")
    g.add_argument("--out-dir", help=f"where the checkpoint, loss curve and config go (default: {d['out_dir']})")
    g.add_argument("--resume", action="store_true", help="continue the run saved in --out-dir")
    g.add_argument("--eval-interval", type=POSITIVE_INT, help=f"steps between validation losses and checkpoints (default: {d['eval_interval']})")
    g.add_argument("--eval-steps", type=POSITIVE_INT, help=f"batches averaged for a validation loss (default: {d['eval_steps']})")
    g.add_argument("--target-loss", type=POSITIVE, help="stop once the validation loss is at or below this")
    g.add_argument("--log-interval", type=POSITIVE_INT, help=f"steps between progress-bar updates (default: {d['log_interval']})")
    g = p.add_argument_group("samples")
    g.add_argument("--prompt", help="text the before/after-training samples continue (default: a newline)")
    g.add_argument("--sample-tokens", type=NONNEG_INT, help=f"tokens in each sample; 0 skips sampling (default: {d['sample_tokens']})")
    g.add_argument("--temperature", type=NONNEG, help=f"sampling temperature; 0 is greedy (default: {d['temperature']})")
    g.add_argument("--top-k", type=POSITIVE_INT, help="sample only among the k most likely tokens")
    return p


# ---------------------------------------------------------------------------- setup


def resolve_options(argv):
    """Command line > checkpoint's saved options (with --resume) > DEFAULTS."""
    given = vars(build_parser().parse_args(argv))
    opts = dict(DEFAULTS)
    out_dir = given.get("out_dir", DEFAULTS["out_dir"])
    saved = None
    if given.get("resume"):
        from gpt.checkpoint import CHECKPOINT_NAME, load_checkpoint
        arrays, meta = load_checkpoint(os.path.join(out_dir, CHECKPOINT_NAME))
        saved = (arrays, meta)
        opts.update(meta["options"])
        if "threads" in meta["options"]:                 # checkpoints from before the rename
            opts["workers"] = opts.pop("threads")
        for key in RUN_FIELDS:
            if key in given and key in meta["options"] and given[key] != meta["options"][key]:
                raise UsageError(f"--resume: the checkpoint in {out_dir} was trained with {key}={meta['options'][key]!r}, "
                                 f"not {given[key]!r}; drop the flag or use another --out-dir")
        for key in MODEL_FIELDS:
            if key in given and given[key] != meta["config"][key]:
                raise UsageError(f"--resume: the checkpoint's model has {key}={meta['config'][key]}, not {given[key]}; "
                                 "drop the flag or use another --out-dir")
    opts.update(given)
    if ("bpe_vocab" in given or "bpe_merges" in given) and "tokenizer" not in given:
        opts["tokenizer"] = "gpt2"
    if opts["init_from"] and not saved and "tokenizer" not in given and "bpe_vocab" not in given:
        _tokenizer_of_hf_dir(opts)
    for path_option in ("data", "bpe_vocab", "bpe_merges", "init_from"):   # a resumed run may start elsewhere
        if opts[path_option] is not None:
            opts[path_option] = os.path.abspath(opts[path_option])
    opts["resume"] = bool(given.get("resume"))
    return opts, saved


def _tokenizer_of_hf_dir(o):
    """--init-from without --tokenizer: the directory's vocab.json + merges.txt if it has them,
    bytes for a 256-token model."""
    vocab, merges = (os.path.join(o["init_from"], name) for name in ("vocab.json", "merges.txt"))
    if os.path.isfile(vocab) and os.path.isfile(merges):
        o.update(tokenizer="gpt2", bpe_vocab=vocab, bpe_merges=merges)
    else:
        from gpt.export import read_hf_config
        if read_hf_config(o["init_from"]).vocab_size == 256:
            o["tokenizer"] = "byte"
        else:
            raise UsageError(f"--init-from {o['init_from']} has no vocab.json/merges.txt; say which --tokenizer it uses")


def check_options(o):
    if o["min_lr"] > o["lr"]:
        raise UsageError(f"--min-lr ({o['min_lr']}) must not exceed --lr ({o['lr']})")
    if o["target_loss"] is not None and o["val_fraction"] == 0:
        raise UsageError("--target-loss needs a validation split; set --val-fraction above 0")
    if o["local_vocab"] and o["tokenizer"] == "byte":
        raise UsageError("--local-vocab applies to BPE; add --tokenizer gpt2")
    if o["init_from"] and not o["resume"]:
        given = [k for k in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size") if o.get(k) is not None]
        if given:
            raise UsageError(f"--init-from takes the architecture from {o['init_from']}/config.json; "
                             f"drop --{given[0].replace('_', '-')}")
        if o["local_vocab"]:
            raise UsageError("--init-from keeps the model's full vocabulary; drop --local-vocab")


def model_config(o, tokenizer, saved_meta=None):
    """The model's GPTConfig: the checkpoint's when resuming, a Hugging Face directory's with
    --init-from, else the preset with the command line's overrides."""
    from gpt.config import GPTConfig
    if saved_meta is not None:
        return GPTConfig.from_dict(saved_meta["config"])
    if o["init_from"]:
        from gpt.export import read_hf_config
        cfg = read_hf_config(o["init_from"])
        if o.get("dropout") is not None:
            cfg = cfg.replace(dropout=o["dropout"])
        if cfg.vocab_size < tokenizer.vocab_size:
            raise UsageError(f"--init-from {o['init_from']} has {cfg.vocab_size} token ids, fewer than the "
                             f"{o['tokenizer']} tokenizer's {tokenizer.vocab_size}")
        return cfg
    overrides = {k: o.get(k) for k in MODEL_FIELDS}
    if overrides["vocab_size"] is None:
        overrides["vocab_size"] = tokenizer.vocab_size
    elif overrides["vocab_size"] < tokenizer.vocab_size:
        raise UsageError(f"--vocab-size {overrides['vocab_size']} is smaller than the {o['tokenizer']} tokenizer's "
                         f"{tokenizer.vocab_size} ids; drop the flag or raise it")
    cfg = GPTConfig.preset(o["preset"], **overrides)
    try:
        cfg.validate()
    except ValueError as e:
        raise UsageError(str(e)) from None
    return cfg


def load_tokens(o):
    """(tokenizer, 1-D token stream) for the run's options."""
    from gpt.data import load_bpe_corpus, load_byte_corpus
    from gpt.tokenizers import LocalVocab, make_tokenizer
    tokenizer = make_tokenizer(o["tokenizer"], o["bpe_vocab"], o["bpe_merges"])
    if o["tokenizer"] == "byte":
        return tokenizer, load_byte_corpus(o["data"])
    tokens = load_bpe_corpus(o["data"], tokenizer, os.path.join(o["out_dir"], "cache"))
    if o["local_vocab"]:
        tokenizer = LocalVocab.from_corpus(tokenizer, tokens)
        tokens = tokenizer.to_local(tokens)
    return tokenizer, tokens


# ---------------------------------------------------------------------------- the run


class Trainer:
    """One training run: model, optimizer, data, and the loop with its logging and files."""

    def __init__(self, o, saved):
        from gpt.checkpoint import CHECKPOINT_NAME
        from gpt.data import BatchSampler, split_tokens
        from gpt.model import GPT
        from gpt.parallel import DataParallel
        from minigrad import AdamW, Backend

        self.o = o
        self.backend = Backend(o["device"], o["dtype"])
        self.tokenizer, tokens = load_tokens(o)
        self.config = model_config(o, self.tokenizer, saved[1] if saved else None)
        train, val = split_tokens(tokens, o["val_fraction"], self.config.block_size)
        self.n_tokens = len(tokens)
        self.train_data = BatchSampler(train, o["batch_size"], self.config.block_size, o["sampling"], o["seed"])
        self.val_data = BatchSampler(val, o["batch_size"], self.config.block_size, "random", o["seed"]) if len(val) else None
        if o["init_from"] and saved is None:
            from gpt.export import load_hf_gpt2
            self.model = load_hf_gpt2(o["init_from"], self.backend, dropout=self.config.dropout)
        else:
            self.model = GPT(self.config, self.backend, seed=o["seed"])
        self.parallel = DataParallel(self.model, o["workers"])
        self.optimizer = AdamW(self.model.params, self.model.grads, self.model.decay_mask(),
                               betas=(o["beta1"], o["beta2"]), weight_decay=o["weight_decay"],
                               threads=self.parallel.n_workers)
        self.ckpt_path = os.path.join(o["out_dir"], CHECKPOINT_NAME)
        self.step = 0                 # optimizer steps completed
        self.history = []             # loss_curve.json records
        self.elapsed = 0.0            # training seconds, summed over resumed sessions
        self.stop_requested = False
        if saved is not None:
            self._restore(*saved)

    # --- checkpoints and files

    def _meta(self):
        return {"step": self.step, "config": self.config.to_dict(), "options": self.o,
                "tokenizer": self.tokenizer.identity, "elapsed": self.elapsed,
                "local_vocab": self.tokenizer.to_base.tolist() if self.o["local_vocab"] else None,
                "data_position": {"sampling": self.o["sampling"], "next_step": self.step, "seed": self.o["seed"]}}

    def _restore(self, arrays, meta):
        if meta["tokenizer"] != self.tokenizer.identity:
            raise UsageError(f"--resume: the checkpoint was trained with tokenizer {meta['tokenizer']}, "
                             f"not {self.tokenizer.identity}; use the same tokenizer files or another --out-dir")
        if arrays["params"].size != self.model.params.size:
            raise UsageError("--resume: the checkpoint's parameter count does not match the model")
        self.model.params[...] = self.backend.asarray(arrays["params"])
        self.optimizer.load_state_dict({"m": self.backend.asarray(arrays["adam_m"]),
                                        "v": self.backend.asarray(arrays["adam_v"]), "t": meta["step"]})
        self.step, self.elapsed = meta["step"], meta.get("elapsed", 0.0)
        curve = os.path.join(self.o["out_dir"], "loss_curve.json")
        if os.path.exists(curve):
            with open(curve) as f:
                self.history = [r for r in json.load(f) if r["step"] <= self.step]

    def save(self):
        from gpt.checkpoint import save_checkpoint
        from gpt.plot import write_loss_plot
        to_host = self.backend.to_host
        save_checkpoint(self.ckpt_path, to_host(self.model.params), to_host(self.optimizer.m),
                        to_host(self.optimizer.v), self._meta())
        _write_json(os.path.join(self.o["out_dir"], "loss_curve.json"), self.history)
        write_loss_plot(os.path.join(self.o["out_dir"], "loss_curve.svg"), self.history)

    # --- pieces of a step

    def _rng_for(self, step, micro, worker):
        """Device RNG for dropout masks, a pure function of (seed, step, micro, worker)."""
        key = np.random.SeedSequence([self.o["seed"], step, micro, worker]).generate_state(1, np.uint32)[0]
        return self.backend.rng(int(key))

    def evaluate(self):
        losses = [self.parallel.loss(x, y) for x, y in self.val_data.eval_batches(self.o["eval_steps"])]
        return float(np.mean(losses))

    def train_step(self):
        """One optimizer step over grad_accum micro-batches; returns (loss, lr, grad norm)."""
        from minigrad import clip_grad_norm, lr_at
        o, model, accum = self.o, self.model, self.o["grad_accum"]
        model.zero_grad()
        loss = 0.0
        for micro in range(accum):
            x, y = self.train_data.get(self.step, micro, accum)
            loss += self.parallel.forward_backward(
                x, y, dloss=1.0 / accum, rng_for=lambda worker: self._rng_for(self.step, micro, worker)) / accum
        norm = clip_grad_norm(model.grads, o["grad_clip"])
        lr = lr_at(self.step, o["lr"], o["min_lr"], o["warmup_steps"], o["max_steps"])
        if math.isfinite(loss) and math.isfinite(norm):
            self.optimizer.step(lr)
        return loss, lr, norm

    def sample(self, label):
        from gpt.generate import generate
        o = self.o
        if o["sample_tokens"] == 0:
            return
        tok = self.tokenizer
        ids = tok.encode(o["prompt"], allowed_special="all")
        if not ids:                                  # an empty prompt starts a new document
            ids = [tok.eot_token] if tok.eot_token is not None else tok.encode("\n")
        if getattr(tok, "last_skipped", 0):
            print(f"note: {tok.last_skipped} prompt token(s) are not in the corpus's local vocabulary "
                  "and were left out")
        ids = ids[-self.config.block_size:]
        new = list(generate(self.model, ids, o["sample_tokens"], o["temperature"], o["top_k"], seed=o["seed"],
                            eot_token=tok.eot_token, vocab_size=tok.vocab_size))
        print(f"--- sample {label} (prompt {o['prompt']!r}) ---")
        print(tok.decode(ids + new))
        print("---")

    # --- the loop

    def first_window(self):
        """Token ids of the first row of the next training batch."""
        x, _ = self.train_data.get(self.step, 0, self.o["grad_accum"])
        return x[0].tolist()

    def show_window(self):
        ids = self.first_window()
        print(f"first training window ({len(ids)} tokens, {self.tokenizer.name}):")
        print("ids:", ids)
        print("text:")
        print(self.tokenizer.decode(ids))

    def run(self):
        from tqdm import tqdm
        o, cfg = self.o, self.config
        if o["show_window"]:
            self.show_window()
            return 0
        os.makedirs(o["out_dir"], exist_ok=True)
        tokens_per_step = o["batch_size"] * cfg.block_size * o["grad_accum"]
        workers = f", {self.parallel.n_workers} worker processes" if self.parallel.n_workers > 1 else ""
        print(f"device: {self.backend.name} ({self.backend.xp.__name__} {self.backend.xp.__version__}, "
              f"{o['dtype']}{workers})")
        print(f"model: {self.model}")
        print(f"data: {o['data']}: {self.n_tokens:,} tokens ({o['tokenizer']} tokenizer), "
              f"{len(self.train_data.tokens):,} train / {len(self.val_data.tokens) if self.val_data else 0:,} validation")
        print(f"tokens per step: {o['batch_size']} x {cfg.block_size} x {o['grad_accum']} = {tokens_per_step:,}")
        if self.step == 0:
            print("first training window:")
            print(self.tokenizer.decode(self.first_window()))
            _write_json(os.path.join(o["out_dir"], "config.json"), {"model": cfg.to_dict(), "options": o})
            self.sample("before training")
        else:
            print(f"resuming from step {self.step} of {o['max_steps']}")
        if self.step >= o["max_steps"]:
            print(f"nothing to do: the run already has {self.step} steps (raise --max-steps to continue)")
            return 0

        previous_handler = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            # A diverging run overflows; _loop reports the non-finite loss itself, in one line.
            with np.errstate(over="ignore", invalid="ignore"):
                status = self._loop(tqdm, tokens_per_step)
        finally:
            signal.signal(signal.SIGINT, previous_handler)
        if status == 0:
            self.sample("after training")
        return status

    def _on_sigint(self, signum, frame):
        if self.stop_requested:                   # a second Ctrl-C aborts at once
            raise KeyboardInterrupt
        self.stop_requested = True

    def _loop(self, tqdm, tokens_per_step):
        o = self.o
        bar = tqdm(total=o["max_steps"], initial=self.step, desc="training", unit="step", dynamic_ncols=True)
        window_start, window_tokens = time.perf_counter(), 0
        while self.step < o["max_steps"]:
            t0 = time.perf_counter()
            loss, lr, norm = self.train_step()
            dt = time.perf_counter() - t0
            if not (math.isfinite(loss) and math.isfinite(norm)):
                bar.close()
                kept = f"the last good checkpoint is {self.ckpt_path}" if os.path.exists(self.ckpt_path) else "no checkpoint was written"
                raise UsageError(f"the loss became {loss} at step {self.step + 1}; stopping ({kept}); "
                                 "try a lower --lr or --grad-clip 1.0")
            self.step += 1
            self.elapsed += dt
            window_tokens += tokens_per_step
            record = {"step": self.step, "train_loss": loss, "val_loss": None, "lr": lr, "grad_norm": norm,
                      "tokens": self.step * tokens_per_step, "elapsed": round(self.elapsed, 3)}
            self.history.append(record)
            bar.update(1)
            if self.step % o["log_interval"] == 0 or self.step == o["max_steps"]:
                now = time.perf_counter()
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", norm=f"{norm:.2f}",
                                tok_s=f"{window_tokens / (now - window_start):,.0f}")
                window_start, window_tokens = now, 0
            done = self.step == o["max_steps"]
            if self.val_data is not None and (self.step % o["eval_interval"] == 0 or done):
                record["val_loss"] = self.evaluate()
                bar.write(f"step {self.step}: train loss {loss:.4f}, val loss {record['val_loss']:.4f}, "
                          f"{self.elapsed:.0f}s")
                if o["target_loss"] is not None and record["val_loss"] <= o["target_loss"]:
                    bar.write(f"reached --target-loss {o['target_loss']} at step {self.step}")
                    done = True
            if done or self.stop_requested or self.step % o["eval_interval"] == 0:
                self.save()
            if self.stop_requested:
                bar.close()
                print(f"interrupted: saved step {self.step} to {self.ckpt_path}; continue with --resume")
                return 130
            if done:
                break
        bar.close()
        print(f"done: {self.step} steps in {self.elapsed:.0f}s; checkpoint {self.ckpt_path}")
        return 0


def _write_json(path, obj):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def main(argv=None):
    from bpe import CorpusError
    from gpt.checkpoint import CheckpointError
    from gpt.data import DataError
    from gpt.export import HFFormatError
    from gpt.parallel import WorkerError
    from gpt.tokenizers import TokenizerChoiceError
    from minigrad import DeviceError

    def train(argv):
        opts, saved = resolve_options(argv)
        check_options(opts)
        trainer = Trainer(opts, saved)
        try:
            return trainer.run()
        finally:
            trainer.parallel.close()
    return run_main(lambda: train(argv),
                    (DataError, CorpusError, CheckpointError, DeviceError, TokenizerChoiceError, HFFormatError,
                     WorkerError),
                    interrupted="interrupted before training started; nothing was saved")


if __name__ == "__main__":
    sys.exit(main())

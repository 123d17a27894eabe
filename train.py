"""Train a GPT-2-style model on a text corpus.

    python train.py                       # byte-level model on the bundled tiny-shakespeare
    python train.py --data my.txt --preset small --max-steps 5000 --device cuda
    python train.py --resume              # continue the run in --out-dir

Every option is listed by `python train.py --help`.
"""
import argparse
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, fields

import numpy as np
from tqdm import tqdm

from bpe.corpus import available_cores
from gpt.config import PRESETS, GPTConfig
from gpt.data.batches import BatchSampler, split_tokens
from gpt.data.corpus import is_url, load_byte_corpus
from gpt.data.token_cache import load_bpe_corpus
from gpt.data.tokenizers import LocalVocab, encode_prompt, make_tokenizer
from gpt.errors import CheckpointError, UserError
from gpt.files.atomic import write_json
from gpt.files.checkpoint import CHECKPOINT_NAME, curve_array, curve_records, digest, save_checkpoint
from gpt.files.hf import read_hf_config
from gpt.files.loading import hf_tokenizer_meta, load_model, no_tokenizer_error, open_backend, read_checkpoint
from gpt.files.untrusted import is_clean_text, short_repr, strict_json
from gpt.generate import generate
from gpt.model import GPT
from gpt.parallel.ranks import AllRanksError, Solo, check_agreement, collectively, world as find_world
from gpt.parallel.workers import CPUWorkers, WorkerError, model_buffers, usable_workers
from gpt.parallel.zero import ZeroShard
from gpt.run.cli import LineParser, UsageError, keep_writing_if_closed, number, run_main
from gpt.run.memory import check_training_memory
from gpt.run.plot import write_loss_plot
from gpt.run.rundir import claim_out_dir, remove_run_files
from gpt.run.terminal import printable
from minigrad import KERNELS, AdamW, kernels, lr_at

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.join(HERE, "data", "tiny_shakespeare.txt")
MODEL_FIELDS = ("n_layer", "n_head", "n_embd", "block_size", "dropout", "vocab_size")
# What a scheduler (SIGTERM), a closed terminal (SIGHUP) or Ctrl-C (SIGINT) sends: finish the
# step, save, exit with 128 + the signal's number. A second one stops at once.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# Options of this invocation alone: never taken from a checkpoint's saved options.
SESSION_FIELDS = ("out_dir", "resume", "overwrite", "show_window")
# Options that define what is trained: a resumed run must not change them.
RUN_FIELDS = ("tokenizer", "bpe_vocab", "bpe_merges", "local_vocab", "seed", "batch_size", "grad_accum",
              "sampling", "val_fraction", "dtype")


@dataclass
class TrainConfig:
    """Every option of a run. The defaults are a compact byte-level model that learns
    tiny-shakespeare in about three minutes on 2 CPU cores. A checkpoint stores asdict(config)
    as its options; the model fields (None: the preset's) only override --preset."""
    data: str = DEFAULT_DATA
    tokenizer: str = "byte"
    preset: str = "mini"
    device: str = "auto"
    dtype: str = "float32"
    seed: int = 1337
    batch_size: int = 16
    grad_accum: int = 1
    max_steps: int = 1500
    lr: float = 2e-3
    min_lr: float = 2e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    eval_interval: int = 250
    eval_steps: int = 20
    val_fraction: float = 0.1
    sampling: str = "random"
    target_loss: float | None = None
    out_dir: str = "out"
    resume: bool = False
    overwrite: bool = False
    bpe_vocab: str | None = None
    bpe_merges: str | None = None
    local_vocab: bool = False
    show_window: bool = False
    init_from: str | None = None
    workers: int | None = None
    prompt: str = "\n"
    sample_tokens: int = 300
    temperature: float = 0.8
    top_k: int | None = None
    log_interval: int = 10
    n_layer: int | None = None
    n_head: int | None = None
    n_embd: int | None = None
    block_size: int | None = None
    dropout: float | None = None
    vocab_size: int | None = None
    kernels: str = "fast"
    tf32: bool = True
    zero: int = 0

    @classmethod
    def from_saved(cls, options):
        """A checkpoint's options -> the fields they set (old names mapped; unknown keys and
        SESSION_FIELDS dropped: the run continues where it was read from)."""
        options = dict(options)
        if "threads" in options:                         # checkpoints from before the rename
            options["workers"] = options.pop("threads")
        known = {f.name for f in fields(cls)} - set(SESSION_FIELDS)
        return {k: v for k, v in options.items() if k in known}

    def check(self):
        """UsageError for options that cannot go together."""
        if self.min_lr > self.lr:
            raise UsageError(f"--min-lr ({self.min_lr}) must not exceed --lr ({self.lr})")
        if self.target_loss is not None and self.val_fraction == 0:
            raise UsageError("--target-loss needs a validation split; set --val-fraction above 0")
        if self.resume and self.overwrite:
            raise UsageError("--resume continues the run in --out-dir and --overwrite replaces it; choose one")
        if self.local_vocab and self.tokenizer == "byte":
            raise UsageError("--local-vocab applies to BPE; add --tokenizer gpt2")
        if self.init_from and not self.resume:
            given = [k for k in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size") if getattr(self, k) is not None]
            if given:
                raise UsageError(f"--init-from takes the architecture from {self.init_from}/config.json; "
                                 f"drop --{given[0].replace('_', '-')}")
            if self.local_vocab:
                raise UsageError("--init-from keeps the model's full vocabulary; drop --local-vocab")

    def tokenizer_options(self):
        return {"tokenizer": self.tokenizer, "bpe_vocab": self.bpe_vocab, "bpe_merges": self.bpe_merges}

    def model_config(self, tokenizer):
        """A new model's GPTConfig: the preset with the command line's overrides."""
        overrides = {k: getattr(self, k) for k in MODEL_FIELDS}
        if overrides["vocab_size"] is None:
            overrides["vocab_size"] = tokenizer.vocab_size
        elif overrides["vocab_size"] < tokenizer.vocab_size:
            raise UsageError(f"--vocab-size {overrides['vocab_size']} is smaller than the {self.tokenizer} tokenizer's "
                             f"{tokenizer.vocab_size} ids; drop the flag or raise it")
        cfg = GPTConfig.preset(self.preset, **overrides)
        try:
            cfg.validate()
        except ValueError as e:
            raise UsageError(str(e)) from None
        return cfg


# Argument types: argparse names the flag in its message.
POSITIVE_INT = number(int, lambda v: v > 0, "> 0")
NONNEG_INT = number(int, lambda v: v >= 0, ">= 0")
POSITIVE = number(float, lambda v: v > 0, "> 0")
NONNEG = number(float, lambda v: v >= 0, ">= 0")
FRACTION = number(float, lambda v: 0 <= v < 1, "in [0, 1)")


def build_parser():
    p = LineParser(prog="train.py", description="Train a GPT-2-style model with explicit NumPy/CuPy forward and backward passes.",
                   argument_default=argparse.SUPPRESS)
    d = asdict(TrainConfig())
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
    g.add_argument("--kernels", choices=KERNELS, help="fast: the optimized layer implementations; reference: the plain "
                   f"ones, to step through in a debugger (default: {d['kernels']})")
    g.add_argument("--no-tf32", dest="tf32", action="store_false", help="CUDA: float32 matrix products in full "
                   "float32, not on TF32 tensor cores (PyTorch's allow_tf32 = False; slower)")
    g.add_argument("--zero", type=int, choices=[0, 1], help="1: ZeRO stage 1 under mpirun, each rank keeps and "
                   "updates 1/N of AdamW's state (default: 0, every rank all of it)")
    g.add_argument("--seed", type=NONNEG_INT, help=f"seed for init, data order, dropout and samples (default: {d['seed']})")
    g.add_argument("--out-dir", help=f"where the checkpoint, loss curve and config go (default: {d['out_dir']})")
    g.add_argument("--resume", action="store_true", help="continue the run saved in --out-dir")
    g.add_argument("--overwrite", action="store_true", help="replace the run saved in --out-dir (its checkpoint, "
                   "curve and config are deleted); without it or --resume, a run refuses a directory with a checkpoint")
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
    """Command line > checkpoint's saved options (with --resume) > TrainConfig's defaults.
    -> (TrainConfig, the gpt.files.checkpoint.Checkpoint with --resume, else None)."""
    parser = build_parser()
    given = vars(parser.parse_args(argv))
    opts = asdict(TrainConfig())
    saved = None
    if given.get("resume"):
        out_dir = given.get("out_dir", opts["out_dir"])
        saved = read_checkpoint(out_dir)
        meta = saved.meta
        opts.update(_checked_options(parser, TrainConfig.from_saved(meta["options"]), saved.path))
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
        opts.update(_tokenizer_of_hf_dir(opts["init_from"]))
    for path_option in ("data", "bpe_vocab", "bpe_merges", "init_from"):   # a resumed run may start elsewhere
        if opts[path_option] is not None and not is_url(opts[path_option]):
            opts[path_option] = os.path.abspath(opts[path_option])
    opts["resume"], opts["overwrite"] = bool(given.get("resume")), bool(given.get("overwrite"))
    cfg = TrainConfig(**opts)
    cfg.check()
    return cfg, saved


def _checked_options(parser, options, path):
    """A checkpoint's saved options, each held to what its command-line flag accepts (the file
    is untrusted) -> options."""
    defaults = asdict(TrainConfig())
    for action in parser._actions:
        key = action.dest
        if key not in options or (options[key] is None and defaults[key] is None):
            continue
        value = options[key]
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            ok = isinstance(value, bool)
        elif action.type is not None:
            try:
                ok = not isinstance(value, (bool, str)) and action.type(str(value)) == value
            except (argparse.ArgumentTypeError, ValueError, TypeError):
                ok = False
        else:
            ok = is_clean_text(value)
        if not ok or (action.choices is not None and value not in action.choices):
            raise CheckpointError(f"checkpoint {path} is corrupted: its saved option {key} = {short_repr(value)} "
                                  f"is not what {action.option_strings[0]} accepts; delete it, or point --out-dir "
                                  "at another run")
    return options


def _tokenizer_of_hf_dir(hf_dir):
    """--init-from without --tokenizer: the tokenizer options of the directory's own tokenizer
    (gpt.files.loading.hf_tokenizer_meta)."""
    vocab_size = read_hf_config(hf_dir).vocab_size
    spec = hf_tokenizer_meta(hf_dir, vocab_size)
    if spec is None:
        raise no_tokenizer_error(hf_dir, vocab_size)
    return spec["options"]


def build_model(cfg, saved, backend, ops, n_workers, world, rows):
    """-> (model, tokenizer, token stream). A new model's size comes from the options and the
    tokenizer; a checkpoint (--resume) or Hugging Face directory (--init-from) brings its own
    model and tokenizer (gpt.files.loading), the corpus is then encoded with that tokenizer. rows:
    how many rows of each batch this rank trains."""
    def make_buffers(config):                    # refuse a run that cannot fit before allocating it
        check_training_memory(config, backend, rows, n_workers, world.size if cfg.zero else 1, world.local_size)
        return model_buffers(config, backend, n_workers)
    if saved is None and not cfg.init_from:
        tokenizer, tokens = load_tokens(cfg)
        config = cfg.model_config(tokenizer)
        return GPT(config, backend, seed=cfg.seed, ops=ops, **make_buffers(config)), tokenizer, tokens
    loaded = load_model(backend, out_dir=cfg.out_dir, hf_dir=None if saved else cfg.init_from, checkpoint=saved,
                        tokenizer_options=cfg.tokenizer_options(), ops=ops, make_buffers=make_buffers,
                        dropout=cfg.dropout)
    tokenizer, tokens = load_tokens(cfg, loaded.tokenizer)
    return loaded.model, tokenizer, tokens


def load_tokens(cfg, tokenizer=None):
    """(tokenizer, 1-D token stream) of the corpus.

    tokenizer: a loaded model's (None: the one the options name, with --local-vocab projected
    onto the ids the corpus uses). A loaded LocalVocab maps the corpus to its ids: with
    --local-vocab (a resumed run) the corpus must give the same vocabulary; otherwise (a model
    from --init-from) tokens it lacks are left out, with a note."""
    local = tokenizer if isinstance(tokenizer, LocalVocab) else None
    base = local.base if local else tokenizer or make_tokenizer(cfg.tokenizer, cfg.bpe_vocab, cfg.bpe_merges)
    if cfg.tokenizer == "byte":
        return base, load_byte_corpus(cfg.data)
    tokens = load_bpe_corpus(cfg.data, base, os.path.join(cfg.out_dir, "cache"))
    if cfg.local_vocab:
        corpus_vocab = LocalVocab.from_corpus(base, tokens)
        if local is not None and corpus_vocab.identity != local.identity:
            raise CheckpointError(f"--resume: the checkpoint was trained with tokenizer {local.identity}, but --data "
                                  f"now gives {corpus_vocab.identity}; use the same corpus or another --out-dir")
        return corpus_vocab, corpus_vocab.to_local(tokens)
    if local is None:
        return base, tokens
    tokens, skipped = local.project(tokens)
    if skipped:
        print(f"note: {skipped:,} corpus token(s) are not in the model's vocabulary of {local.vocab_size:,} "
              "and were left out")
    return local, tokens


def show_window(ids, tokenizer):
    print(f"first training window ({len(ids)} tokens, {tokenizer.name}):")
    print("ids:", ids)
    print("text:")
    print(printable(tokenizer.decode(ids)))


# ---------------------------------------------------------------------------- the run


class Trainer:
    """One training run: model, optimizer, data, and the loop with its logging and files."""

    def __init__(self, cfg, saved=None, world=None):
        self.cfg = cfg
        self.world = world = world or Solo()      # the ranks (gpt.parallel.ranks); rank 0 writes the files
        if cfg.batch_size < world.size:
            raise UsageError(f"--batch-size {cfg.batch_size} is smaller than the {world.size} ranks: each rank "
                             "trains at least one row; raise --batch-size or use fewer ranks")
        if cfg.device != "cpu":
            world.use_gpu()                      # this rank's GPU, before the backend probes one
        self.backend = open_backend(cfg.device, cfg.dtype)
        cores = max(1, available_cores() // world.local_size)          # ranks on one machine share its cores
        n_workers = usable_workers(self.backend, cfg.workers or cores)
        if n_workers > cores:                    # each extra worker costs a model-sized gradient buffer
            print(f"note: --workers {n_workers} is more than the {cores} cores this process may use; using {cores}")
            n_workers = cores
        ops = kernels(self.backend.name, cfg.kernels, threads=n_workers, tf32=cfg.tf32)
        self.rows = world.share(cfg.batch_size)  # this rank's rows of every batch
        self.share = (self.rows.stop - self.rows.start) / cfg.batch_size   # n_r / B, its weight in a loss
        self.model, self.tokenizer, tokens = build_model(cfg, saved, self.backend, ops, n_workers, world,
                                                         self.rows.stop - self.rows.start)
        self.config = self.model.config
        train, val = split_tokens(tokens, cfg.val_fraction, self.config.block_size)
        self.n_tokens = len(tokens)
        self.facts = self._facts(tokens) if world.size > 1 else None   # compared by agree()
        self.train_data = BatchSampler(train, cfg.batch_size, self.config.block_size, cfg.sampling, cfg.seed)
        self.val_data = BatchSampler(val, cfg.batch_size, self.config.block_size, "random", cfg.seed) if len(val) else None
        self.workers = CPUWorkers(self.model, n_workers)
        self.shard = ZeroShard(world, self.model.params.size) if cfg.zero else None
        self.owned = self.shard.owned if self.shard else slice(None)     # the optimizer's part of the buffers
        self.optimizer = self._optimizer(ops)
        self.ckpt_path = os.path.join(cfg.out_dir, CHECKPOINT_NAME)
        self.step = 0                 # optimizer steps completed
        self.history = []             # loss_curve.json records
        self.elapsed = 0.0            # training seconds, summed over resumed sessions
        self.stop_signal = None       # the first stop signal received, if any
        self.saved_step = None        # the step of the last checkpoint this session wrote
        self.pending = []             # this log window's records, their loss and norm not yet read back
        # ckpt.npz may become ckpt.prev.npz when the next save replaces it: only if it is known good
        self.keep_previous = saved is not None and saved.path == self.ckpt_path
        if saved is not None:
            self._restore(saved)

    def _optimizer(self, ops):
        """AdamW over the flat buffers; with --zero 1 over this rank's slice of them, with a
        gradient slice of its own (which the reduce-scatter fills)."""
        model, cfg, owned = self.model, self.cfg, self.owned
        grads = self.backend.xp.zeros_like(model.grads[owned]) if self.shard else model.grads
        return AdamW(model.params[owned], grads, model.decay_mask()[owned], betas=(cfg.beta1, cfg.beta2),
                     weight_decay=cfg.weight_decay, ops=ops)

    def agree(self):
        """Under mpirun: every rank checks that all have the same facts (a collective)."""
        if self.world.size > 1:
            check_agreement(self.world, self.facts)

    def _facts(self, tokens):
        """What every rank must agree on: the options, the backend, the model it starts from, the data."""
        options = {k: v for k, v in asdict(self.cfg).items() if k != "workers"}
        return {"options": options, "backend": f"{self.backend.name} {np.dtype(self.backend.dtype).name}",
                "model": self.config.to_dict(),
                "parameters": digest(self.backend.to_host(self.model.params)),
                "data": f"{len(tokens)} tokens, sha256 {digest(np.asarray(tokens))}"}

    # --- checkpoints and files

    def _meta(self):
        local = isinstance(self.tokenizer, LocalVocab)
        return {"step": self.step, "config": self.config.to_dict(), "options": asdict(self.cfg),
                "tokenizer": self.tokenizer.identity, "elapsed": self.elapsed,
                "local_vocab": self.tokenizer.to_base.tolist() if local else None}

    def _restore(self, checkpoint):
        """The optimizer and progress of a checkpoint (the model's parameters are loaded already)."""
        arrays, meta = checkpoint.arrays, checkpoint.meta
        self.optimizer.load_state_dict({"m": self.backend.asarray(arrays["adam_m"][self.owned]),
                                        "v": self.backend.asarray(arrays["adam_v"][self.owned]), "t": meta["step"]})
        self.step, self.elapsed = meta["step"], meta.get("elapsed", 0.0)
        history = checkpoint.history if checkpoint.history is not None else self._old_curve()
        self.history = [r for r in history if r["step"] <= self.step]

    def _old_curve(self):
        """loss_curve.json, where checkpoints of format 1 kept the curve; [] with a warning when
        it is unreadable (the curve then restarts; the checkpoint is what matters)."""
        path = os.path.join(self.cfg.out_dir, "loss_curve.json")
        if not os.path.exists(path):
            return []
        try:
            with open(path, "rb") as f:
                history = strict_json(f.read().decode("utf-8"))
            return curve_records(curve_array(history))           # checked: numbers where numbers go
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            pass
        print(f"warning: {path} is unreadable; the loss curve restarts at step {self.step}", file=sys.stderr)
        return []

    def save(self):
        """Checkpoint (with the loss curve inside), then its copies for people: loss_curve.json and
        the plot. A full disk or a read-only directory stops the run with one line (WriteError)."""
        to_host = self.backend.to_host
        m, v = to_host(self.optimizer.m), to_host(self.optimizer.v)
        if self.shard:                           # every rank sends its slice of the moments
            m, v = self.shard.gather(m), self.shard.gather(v)
        if self.world.rank != 0:                 # rank 0 holds the same state, and writes it
            self.saved_step = self.step
            return
        save_checkpoint(self.ckpt_path, to_host(self.model.params), m, v, self._meta(), self.history,
                        keep_previous=self.keep_previous)
        self.saved_step, self.keep_previous = self.step, True
        write_json(os.path.join(self.cfg.out_dir, "loss_curve.json"), self.history)
        write_loss_plot(os.path.join(self.cfg.out_dir, "loss_curve.svg"), self.history)

    def checkpoint_left(self):
        """What a run that stops now leaves behind, for its last message."""
        if self.saved_step is not None:
            return f"the checkpoint of step {self.saved_step} is in {self.ckpt_path}"
        if os.path.exists(self.ckpt_path):
            return f"the previous checkpoint in {self.ckpt_path} is unchanged"
        return "no checkpoint was written"

    # --- pieces of a step

    def _dropout_seed(self, step, micro):
        """The dropout seed of a micro-batch, a pure function of (seed, step, micro): each row's
        masks then depend on its place in the batch, not on which rank or worker trains it."""
        return int(np.random.SeedSequence([self.cfg.seed, step, micro]).generate_state(1, np.uint32)[0])

    def evaluate(self):
        """The validation loss over --eval-steps fixed batches, each rank its rows' share."""
        losses = [self.workers.loss(x[self.rows], y[self.rows]) * self.share
                  for x, y in self.val_data.eval_batches(self.cfg.eval_steps)]
        return float(self._summed(sum(losses))) / len(losses)      # one read from the device

    def _summed(self, loss):
        """A rank's share of a loss -> the sum over the ranks (0-d, on the loss's device)."""
        if self.world.size == 1:
            return loss
        xp = self.backend.xp
        total = xp.reshape(xp.asarray(loss, dtype=self.backend.dtype), (1,))
        return self.world.allreduce(total)[0]

    def train_step(self):
        """One optimizer step over grad_accum micro-batches -> (loss, lr, grad norm). The loss
        and the norm stay where they were computed (0-d device arrays on a GPU): the step
        waits for nothing, and the loop reads them back once per --log-interval."""
        cfg, model, accum = self.cfg, self.model, self.cfg.grad_accum
        model.zero_grad()
        losses, share = [], self.share
        for micro in range(accum):
            x, y = self.train_data.get(self.step, micro, accum)
            loss = self.workers.forward_backward(x[self.rows], y[self.rows], dloss=share / accum,
                                                 dropout_seed=self._dropout_seed(self.step, micro),
                                                 first_row=self.rows.start)
            losses.append(loss if share == 1 else loss * share)
        loss = self._summed(losses[0] if accum == 1 else sum(losses) / accum)
        lr = lr_at(self.step, cfg.lr, cfg.min_lr, cfg.warmup_steps, cfg.max_steps)
        if self.shard is None:
            self.world.allreduce(model.grads)        # the ranks' terms: the whole batch's gradient
            norm = model.ops.clip_grad_norm(model.grads, cfg.grad_clip)
            self.optimizer.step(lr)
        else:                                        # ZeRO 1: this rank's slice of all of that
            self.shard.reduce_scatter(model.grads, self.optimizer.grads)
            norm = self.shard.clip(self.optimizer.grads, cfg.grad_clip, self.backend.xp)
            self.optimizer.step(lr)
            self.shard.allgather(model.params)
        return loss, lr, norm

    def sample(self, label):
        cfg, tok = self.cfg, self.tokenizer
        if cfg.sample_tokens == 0 or self.world.rank != 0:
            return
        ids = encode_prompt(cfg.prompt, tok, self.config.block_size, note=print)
        new = list(generate(self.model, ids, cfg.sample_tokens, cfg.temperature, cfg.top_k, seed=cfg.seed,
                            eot_token=tok.eot_token, vocab_size=tok.vocab_size))
        print(f"--- sample {label} (prompt {cfg.prompt!r}) ---")
        print(printable(tok.decode(ids + new)))
        print("---")

    def first_window(self):
        """Token ids of the first row of the next training batch."""
        x, _ = self.train_data.get(self.step, 0, self.cfg.grad_accum)
        return x[0].tolist()

    # --- the loop

    def run(self):
        cfg = self.cfg
        if cfg.show_window:
            show_window(self.first_window(), self.tokenizer)
            return 0
        os.makedirs(cfg.out_dir, exist_ok=True)      # main() has claimed it (gpt.run.rundir) already
        tokens_per_step = cfg.batch_size * self.config.block_size * cfg.grad_accum
        self._print_setup(tokens_per_step)
        if self.step == 0:
            if cfg.overwrite and self.world.rank == 0:
                remove_run_files(cfg.out_dir)    # the run is built: the one it replaces goes
            print("first training window:")
            print(printable(self.tokenizer.decode(self.first_window())))
            if self.world.rank == 0:
                write_json(os.path.join(cfg.out_dir, "config.json"),
                           {"model": self.config.to_dict(), "options": asdict(cfg)})
            self.sample("before training")
        else:
            print(f"resuming from step {self.step} of {cfg.max_steps}")
        if self.step >= cfg.max_steps:
            print(f"nothing to do: the run already has {self.step} steps (raise --max-steps to continue)")
            return 0

        previous = {signum: signal.signal(signum, self._on_stop_signal) for signum in STOP_SIGNALS}
        try:
            # A diverging run overflows; _loop reports the non-finite loss itself, in one line.
            with np.errstate(over="ignore", invalid="ignore"):
                status = self._loop(tokens_per_step)
        except WorkerError as e:                  # the steps before it are good: keep them
            raise WorkerError(f"{e}; {self._save_after_fault()}") from None
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        if status == 0:
            self.sample("after training")
        return status

    def _print_setup(self, tokens_per_step):
        cfg, xp, n = self.cfg, self.backend.xp, self.workers.n_workers
        workers = f", {n} worker processes" if n > 1 else ""
        if self.world.size > 1:
            workers += f"; rank 0 of {self.world.size} MPI ranks, {self.rows.stop - self.rows.start} of the {cfg.batch_size} rows"
        print(f"device: {self.backend.name} ({xp.__name__} {xp.__version__}, {cfg.dtype}{workers})")
        print(f"model: {self.model}")
        print(f"data: {cfg.data}: {self.n_tokens:,} tokens ({cfg.tokenizer} tokenizer), "
              f"{len(self.train_data.tokens):,} train / {len(self.val_data.tokens) if self.val_data else 0:,} validation")
        print(f"tokens per step: {cfg.batch_size} x {self.config.block_size} x {cfg.grad_accum} = {tokens_per_step:,}")
        if self.shard:
            kept = self.optimizer.m.nbytes + self.optimizer.v.nbytes
            print(f"ZeRO stage 1: each rank keeps about 1/{self.world.size} of AdamW's moments "
                  f"(rank 0: {kept / 2**20:,.2f} of {2 * self.model.params.nbytes / 2**20:,.2f} MiB)")

    def _on_stop_signal(self, signum, frame):
        if self.stop_signal is not None:          # a second signal aborts at once
            raise StoppedAtOnce(signum)
        self.stop_signal = signum

    def _loop(self, tokens_per_step):
        cfg = self.cfg
        bar = tqdm(total=cfg.max_steps, initial=self.step, desc="training", unit="step", dynamic_ncols=True,
                   disable=self.world.rank != 0)
        self.window_start = time.perf_counter()
        try:                          # the bar ends its line before any error message
            while self.step < cfg.max_steps:
                loss, lr, norm = self.train_step()           # on the device: not read back yet
                self.step += 1
                record = {"step": self.step, "train_loss": loss, "val_loss": None, "lr": lr, "grad_norm": norm,
                          "tokens": self.step * tokens_per_step, "elapsed": None}
                self.history.append(record)
                self.pending.append(record)
                bar.update(1)
                done = self.step == cfg.max_steps
                stop = self.world.max_int(self.stop_signal or 0) or None    # any rank's signal stops all
                evaluate = self.val_data is not None and (self.step % cfg.eval_interval == 0 or done)
                save = done or evaluate or stop is not None or self.step % cfg.eval_interval == 0
                if save or self.step % cfg.log_interval == 0:
                    window = time.perf_counter() - self.window_start    # includes waiting for the device
                    tokens_per_s = len(self.pending) * tokens_per_step / window
                    self._read_back(window)
                    bar.set_postfix(loss=f"{record['train_loss']:.4f}", lr=f"{lr:.2e}",
                                    norm=f"{record['grad_norm']:.2f}", tok_s=f"{tokens_per_s:,.0f}")
                if evaluate:
                    record["val_loss"] = self.evaluate()
                    bar.write(f"step {self.step}: train loss {record['train_loss']:.4f}, "
                              f"val loss {record['val_loss']:.4f}, {self.elapsed:.0f}s")
                    if cfg.target_loss is not None and record["val_loss"] <= cfg.target_loss:
                        bar.write(f"reached --target-loss {cfg.target_loss} at step {self.step}")
                        done = True
                if save:
                    self.save()
                if not self.pending:
                    self.window_start = time.perf_counter()
                if stop is not None:
                    bar.close()
                    print(f"stopped by {signal.Signals(stop).name}: saved step {self.step} to {self.ckpt_path}; "
                          "continue with --resume")
                    return 128 + stop
                if done:
                    break
        finally:
            bar.close()
        print(f"done: {self.step} steps in {self.elapsed:.0f}s; checkpoint {self.ckpt_path}")
        return 0

    def _read_back(self, window):
        """Turn the pending records' device losses and norms into floats (one device sync), spread
        the window's training time over them, and stop with one line if the run diverged."""
        records, self.pending = self.pending, []
        if not records:
            return
        xp = self.backend.xp
        values = [xp.asarray(v) for r in records for v in (r["train_loss"], r["grad_norm"])]
        host = self.backend.to_host(xp.stack(values))                     # (2 n,) loss, norm, ...
        for i, r in enumerate(records):
            r["train_loss"], r["grad_norm"] = float(host[2 * i]), float(host[2 * i + 1])
            r["elapsed"] = round(self.elapsed + window * (i + 1) / len(records), 3)
        self.elapsed += window
        for r in records:
            for key, what in (("grad_norm", "gradient norm"), ("train_loss", "loss")):
                if not math.isfinite(r[key]):
                    kept = self.checkpoint_left()
                    advice = "a lower --lr" + (" or --grad-clip 1.0" if self.cfg.grad_clip == 0 else "")
                    raise Diverged(f"the {what} became {r[key]} at step {r['step']}; stopping ({kept}); "
                                     f"try {advice}")

    def _save_after_fault(self):
        """Save the last completed step after a worker process died -> what was saved, in words.
        Under mpirun the other ranks are in the step's collectives: saving would need them."""
        if self.world.size > 1:
            return self.checkpoint_left()
        try:
            self._read_back(time.perf_counter() - self.window_start)
            self.save()
        except UserError as e:
            return f"could not save the last step ({e})"
        return f"saved step {self.step} to {self.ckpt_path}: continue with --resume"


class Diverged(UsageError):
    """The loss or the gradient norm became non-finite (the same on every rank: they are summed)."""


class EndedAlone(Exception):
    """This rank's run ended on its own (a second signal, Ctrl-C outside the loop): under mpirun
    the other ranks must be ended too (MPI_Abort); code is the exit status."""

    def __init__(self, code):
        super().__init__(code)
        self.code = code


class StoppedAtOnce(Exception):
    """A second stop signal arrived: leave now, without finishing the step."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


def main(argv=None):
    ranks = []           # the world, once found
    together = []        # true once every rank is known to end the same way
    def train():
        world = find_world()
        ranks.append(world)
        if world.rank != 0:
            sys.stdout = open(os.devnull, "w")  # rank 0 prints; the others print only their own errors
        try:
            status = train_on(world)
        except EndedAlone as e:
            return e.code
        except (AllRanksError, Diverged):        # raised alike on every rank: rank 0 says it
            together.append(True)
            if world.rank == 0:
                raise
            return 2
        except UserError as e:
            if world.rank == 0:
                raise
            raise UserError(f"rank {world.rank} on {world.host}: {e}") from None
        together.append(True)                    # the loop's stops are collective decisions
        return status

    def train_on(world):
        cfg, saved = collectively(world, lambda: resolve_options(argv))
        run_dir = None
        if not cfg.show_window:
            run_dir = _claimed_by_rank_0(world, cfg)
            if saved is not None and saved.changed():      # another run saved before we held the lock
                cfg, saved = collectively(world, lambda: resolve_options(argv))
        try:
            trainer = collectively(world, lambda: Trainer(cfg, saved, world))
            try:
                trainer.agree()
                return trainer.run()
            except KeyboardInterrupt:                      # Ctrl-C outside the loop: the samples
                print(f"\ninterrupted; {trainer.checkpoint_left()}", file=sys.stderr)
                raise EndedAlone(130) from None
            except StoppedAtOnce as e:
                print(f"\nstopped at once by a second {signal.Signals(e.signum).name}; {trainer.checkpoint_left()}",
                      file=sys.stderr)
                raise EndedAlone(128 + e.signum) from None
            finally:
                trainer.workers.close()
        finally:
            if run_dir is not None:
                run_dir.release()

    with keep_writing_if_closed():               # a closed terminal or `| head` must not stop the run
        status = run_main(train, interrupted="interrupted before training started; nothing was saved",
                          out_of_memory="lower --batch-size (--grad-accum keeps the tokens per step) or "
                                        "--block-size; the last checkpoint is unchanged")
    if ranks and ranks[0].size > 1 and status != 0 and not together:
        ranks[0].abort(status)                   # this rank alone failed: the others would wait for it
    return status


def _claimed_by_rank_0(world, cfg):
    """Rank 0 claims --out-dir (gpt.run.rundir) -> its RunDir (None on the others); a refusal is
    raised on every rank (AllRanksError under mpirun)."""
    return collectively(world, lambda: claim_out_dir(cfg.out_dir, cfg.resume, cfg.overwrite)
                        if world.rank == 0 else None)


if __name__ == "__main__":
    sys.exit(main())

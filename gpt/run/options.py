"""train.py's options: one dataclass field each, with its flag, help and check beside it.

    cfg, saved = resolve_options(sys.argv[1:])     # command line > a checkpoint's options > defaults

TrainConfig's fields are the schema: each field's metadata holds its command-line help, its
argparse type (a checker from gpt.run.cli) or choices, its group in --help, and its kind:

    model     overrides a field of the preset's GPTConfig; a resumed run must not change it
    run       defines what is trained (data, tokenizer, batch, seed, dtype); fixed by --resume
    session   this invocation alone (--out-dir, --resume ...): never read back from a checkpoint

A checkpoint stores asdict(config) as its options; reading them back (--resume) holds every
value to what its flag accepts, since the file is untrusted. This module does not build
models or read corpora.
"""
import argparse
import os
from dataclasses import asdict, dataclass, field, fields

from minigrad import KERNELS
from minigrad.backend import DEVICES

from ..config import PRESETS, GPTConfig
from ..data.corpus import is_url
from ..errors import CheckpointError, UsageError
from ..files.hf import read_hf_config
from ..files.loading import hf_tokenizer_meta, no_tokenizer_error, read_checkpoint
from ..files.untrusted import is_clean_text, short_repr
from .cli import LineParser, number

HERE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_DATA = os.path.join(HERE, "data", "tiny_shakespeare.txt")

PATH_OPTIONS = ("data", "bpe_vocab", "bpe_merges", "init_from")
# Argument types: argparse names the flag in its message.
POSITIVE_INT = number(int, lambda v: v > 0, "> 0")
NONNEG_INT = number(int, lambda v: v >= 0, ">= 0")
POSITIVE = number(float, lambda v: v > 0, "> 0")
NONNEG = number(float, lambda v: v >= 0, ">= 0")
FRACTION = number(float, lambda v: 0 <= v < 1, "in [0, 1)")


def option(default, group, help, kind=None, flag=None, **argparse_kwargs):
    """A TrainConfig field with its flag: `help` may name {default}; `flag` defaults to the
    field's name as --kebab-case; argparse_kwargs: type, choices, action, metavar."""
    return field(default=default, metadata={"group": group, "help": help, "kind": kind, "flag": flag,
                                            "argparse": argparse_kwargs})


@dataclass
class TrainConfig:
    """Every option of a run. The defaults are a compact byte-level model that learns
    tiny-shakespeare in about three minutes on 2 CPU cores. The model fields (None: the
    preset's) only override --preset."""
    data: str = option(DEFAULT_DATA, "data", "text file or directory of text files (default: the bundled "
                       "tiny-shakespeare); a resumed run may read it from another place")
    tokenizer: str = option("byte", "data", "byte: 256 byte ids; gpt2: GPT-2 BPE (default: {default})", kind="run",
                            choices=["byte", "gpt2"])
    bpe_vocab: str | None = option(None, "data", "vocab.json (or encoder.json) of another BPE vocabulary; implies "
                                   "--tokenizer gpt2", kind="run")
    bpe_merges: str | None = option(None, "data", "merges.txt (or vocab.bpe) that goes with --bpe-vocab", kind="run")
    local_vocab: bool = option(False, "data", "BPE: shrink the model's vocabulary to the ids the corpus uses",
                               kind="run", action="store_true")
    show_window: bool = option(False, "data", "print the first training window (ids and text) and exit",
                               kind="session", action="store_true")
    val_fraction: float = option(0.1, "data", "last fraction of the corpus held out for validation (default: "
                                 "{default})", kind="run", type=FRACTION)
    sampling: str = option("random", "data", "random windows, or consecutive windows in order (default: {default})",
                           kind="run", choices=["random", "sequential"])
    preset: str = option("mini", "model", "model size; the flags below override its fields (default: {default})",
                         choices=list(PRESETS))
    n_layer: int | None = option(None, "model", "number of transformer blocks", kind="model", type=POSITIVE_INT)
    n_head: int | None = option(None, "model", "attention heads per block", kind="model", type=POSITIVE_INT)
    n_embd: int | None = option(None, "model", "embedding width C (divisible by --n-head)", kind="model",
                                type=POSITIVE_INT)
    block_size: int | None = option(None, "model", "context window T in tokens", kind="model", type=POSITIVE_INT)
    dropout: float | None = option(None, "model", "dropout probability (default: 0)", kind="model", type=FRACTION)
    vocab_size: int | None = option(None, "model", "output head size; at least the tokenizer's vocabulary (default: "
                                    "the tokenizer's)", kind="model", type=POSITIVE_INT)
    init_from: str | None = option(None, "model", "start from a Hugging Face GPT-2 directory (config.json + "
                                   "model.safetensors); its architecture replaces --preset and the model flags "
                                   "except --dropout", metavar="HF_DIR")
    batch_size: int = option(16, "optimization", "sequences per micro-batch B (default: {default})", kind="run",
                             type=POSITIVE_INT)
    grad_accum: int = option(1, "optimization", "micro-batches per optimizer step (default: {default})", kind="run",
                             type=POSITIVE_INT)
    max_steps: int = option(1500, "optimization", "optimizer steps in the run (default: {default})",
                            type=POSITIVE_INT)
    lr: float = option(2e-3, "optimization", "peak learning rate (default: {default})", type=POSITIVE)
    min_lr: float = option(2e-4, "optimization", "learning rate at the end of the cosine decay (default: {default})",
                           type=NONNEG)
    warmup_steps: int = option(100, "optimization", "steps of linear warm-up (default: {default})", type=NONNEG_INT)
    weight_decay: float = option(0.1, "optimization", "AdamW decoupled weight decay on 2-D weights (default: "
                                 "{default})", type=NONNEG)
    beta1: float = option(0.9, "optimization", "AdamW first-moment decay (default: {default})", type=FRACTION)
    beta2: float = option(0.99, "optimization", "AdamW second-moment decay (default: {default})", type=FRACTION)
    grad_clip: float = option(1.0, "optimization", "clip the global gradient norm to this; 0 turns clipping off "
                              "(default: {default})", type=NONNEG)
    device: str = option("auto", "run", "auto uses CUDA when CuPy finds a GPU (default: {default})",
                         choices=list(DEVICES))
    dtype: str = option("float32", "run", "floating-point type of parameters and activations (default: {default})",
                        kind="run", choices=["float32", "float64"])
    workers: int | None = option(None, "run", "CPU worker processes, each training a slice of the batch "
                                 "(default: all cores)", type=POSITIVE_INT)
    kernels: str = option("fast", "run", "fast: the optimized layer implementations; reference: the plain ones, "
                          "to step through in a debugger (default: {default})", choices=list(KERNELS))
    tf32: bool = option(True, "run", "CUDA: float32 matrix products in full float32, not on TF32 tensor cores "
                        "(PyTorch's allow_tf32 = False; slower)", flag="--no-tf32", action="store_false")
    zero: int = option(0, "run", "1: ZeRO stage 1 under mpirun, each rank keeps and updates 1/N of AdamW's state "
                       "(default: 0, every rank all of it)", type=int, choices=[0, 1])
    seed: int = option(1337, "run", "seed for init, data order, dropout and samples (default: {default})",
                       kind="run", type=NONNEG_INT)
    out_dir: str = option("out", "run", "where the checkpoint, loss curve and config go (default: {default})",
                          kind="session")
    resume: bool = option(False, "run", "continue the run saved in --out-dir", kind="session", action="store_true")
    overwrite: bool = option(False, "run", "replace the run saved in --out-dir (its checkpoint, curve and config "
                             "are deleted); without it or --resume, a run refuses a directory with a checkpoint",
                             kind="session", action="store_true")
    eval_interval: int = option(250, "run", "steps between validation losses and checkpoints (default: {default})",
                                type=POSITIVE_INT)
    eval_steps: int = option(20, "run", "batches averaged for a validation loss (default: {default})",
                             type=POSITIVE_INT)
    target_loss: float | None = option(None, "run", "stop once the validation loss is at or below this",
                                       type=POSITIVE)
    log_interval: int = option(10, "run", "steps between progress-bar updates (default: {default})",
                               type=POSITIVE_INT)
    prompt: str = option("\n", "samples", "text the before/after-training samples continue (default: a newline)")
    sample_tokens: int = option(300, "samples", "tokens in each sample; 0 skips sampling (default: {default})",
                                type=NONNEG_INT)
    temperature: float = option(0.8, "samples", "sampling temperature; 0 is greedy (default: {default})",
                                type=NONNEG)
    top_k: int | None = option(None, "samples", "sample only among the k most likely tokens", type=POSITIVE_INT)

    @classmethod
    def of_kind(cls, kind):
        """The names of the fields of one kind ('model', 'run', 'session')."""
        return tuple(f.name for f in fields(cls) if f.metadata["kind"] == kind)

    @classmethod
    def from_saved(cls, options):
        """A checkpoint's options -> the fields they set (unknown keys and session fields
        dropped: the run continues where it was read from)."""
        known = {f.name for f in fields(cls)} - set(cls.of_kind("session"))
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
            given = [k for k in self.of_kind("model") if k != "dropout" and getattr(self, k) is not None]
            if given:
                raise UsageError(f"--init-from takes the architecture from {self.init_from}/config.json; "
                                 f"drop --{given[0].replace('_', '-')}")
            if self.local_vocab:
                raise UsageError("--init-from keeps the model's full vocabulary; drop --local-vocab")

    def tokenizer_options(self):
        return {"tokenizer": self.tokenizer, "bpe_vocab": self.bpe_vocab, "bpe_merges": self.bpe_merges}

    def model_config(self, tokenizer):
        """A new model's GPTConfig: the preset with the command line's overrides."""
        overrides = {k: getattr(self, k) for k in self.of_kind("model")}
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


def flag_of(f):
    return f.metadata["flag"] or "--" + f.name.replace("_", "-")


def build_parser():
    """The command line, from TrainConfig's fields. Flags not given are absent from the parsed
    namespace (argument_default=SUPPRESS), so a resumed run can tell them from defaults."""
    p = LineParser(prog="train.py", description="Train a GPT-2-style model with explicit NumPy/CuPy forward and "
                   "backward passes.", argument_default=argparse.SUPPRESS)
    groups = {}
    for f in fields(TrainConfig):
        if f.metadata["group"] not in groups:
            groups[f.metadata["group"]] = p.add_argument_group(f.metadata["group"])
        _add_flag(groups[f.metadata["group"]], f, f.default)
    return p


def _add_flag(parser, f, default):
    """Field f's flag on parser (or an argument group), its help showing `default`."""
    parser.add_argument(flag_of(f), dest=f.name, help=f.metadata["help"].format(default=default),
                        **f.metadata["argparse"])


def check_saved(options, path):
    """A checkpoint's saved options, each held to what its flag accepts (the file is
    untrusted) -> options; CheckpointError naming the first that is not."""
    for f in fields(TrainConfig):
        if f.name not in options or (options[f.name] is None and f.default is None):
            continue
        value, kwargs = options[f.name], f.metadata["argparse"]
        if kwargs.get("action") in ("store_true", "store_false"):
            ok = isinstance(value, bool)
        elif kwargs.get("type") is not None:
            try:
                ok = not isinstance(value, (bool, str)) and kwargs["type"](str(value)) == value
            except (argparse.ArgumentTypeError, ValueError, TypeError):
                ok = False
        else:
            ok = is_clean_text(value)
        if not ok or ("choices" in kwargs and value not in kwargs["choices"]):
            raise CheckpointError(f"checkpoint {path} is corrupted: its saved option {f.name} = {short_repr(value)} "
                                  f"is not what {flag_of(f)} accepts; delete it, or point --out-dir at another run")
    return options


def resolve_options(argv):
    """Command line > checkpoint's saved options (with --resume) > TrainConfig's defaults.
    -> (TrainConfig, the gpt.files.checkpoint.Checkpoint with --resume, else None)."""
    given = _absolute_paths(vars(build_parser().parse_args(argv)))
    opts = asdict(TrainConfig())
    saved = None
    if given.get("resume"):
        out_dir = given.get("out_dir", opts["out_dir"])
        saved = read_checkpoint(out_dir)
        meta = saved.meta
        opts.update(check_saved(TrainConfig.from_saved(meta["options"]), saved.path))
        for key in TrainConfig.of_kind("run"):
            if key in given and key in meta["options"] and given[key] != meta["options"][key]:
                raise UsageError(f"--resume: the checkpoint in {out_dir} was trained with "
                                 f"{key}={meta['options'][key]!r}, not {given[key]!r}; "
                                 "drop the flag or use another --out-dir")
        for key in TrainConfig.of_kind("model"):
            if key in given and given[key] != meta["config"][key]:
                raise UsageError(f"--resume: the checkpoint's model has {key}={meta['config'][key]}, not {given[key]}; "
                                 "drop the flag or use another --out-dir")
    opts.update(given)
    if ("bpe_vocab" in given or "bpe_merges" in given) and "tokenizer" not in given:
        opts["tokenizer"] = "gpt2"
    if opts["init_from"] and not saved and "tokenizer" not in given and "bpe_vocab" not in given:
        opts.update(_tokenizer_of_hf_dir(opts["init_from"]))
    opts = _absolute_paths(opts)                        # a resumed run may start elsewhere
    opts["resume"], opts["overwrite"] = bool(given.get("resume")), bool(given.get("overwrite"))
    cfg = TrainConfig(**opts)
    cfg.check()
    return cfg, saved


def _absolute_paths(options):
    """options with its file paths absolute (URLs left as they are, to be refused by the data)."""
    return {k: os.path.abspath(v) if k in PATH_OPTIONS and v is not None and not is_url(v) else v
            for k, v in options.items()}


def _tokenizer_of_hf_dir(hf_dir):
    """--init-from without --tokenizer: the tokenizer options of the directory's own tokenizer
    (gpt.files.loading.hf_tokenizer_meta)."""
    vocab_size = read_hf_config(hf_dir).vocab_size
    spec = hf_tokenizer_meta(hf_dir, vocab_size)
    if spec is None:
        raise no_tokenizer_error(hf_dir, vocab_size)
    return spec["options"]


def add_device_flags(parser, defaults):
    """--device, --kernels and --no-tf32, for commands other than train.py (sample.py), with
    TrainConfig's help and choices."""
    for f in fields(TrainConfig):
        if f.name in ("device", "kernels", "tf32"):
            _add_flag(parser, f, defaults[f.name])

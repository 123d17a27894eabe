"""Export a training run as a Hugging Face GPT-2 directory:

    python -m gpt.export --out-dir out --hf-dir out/hf

reads out/ckpt.npz (gpt.files.loading) and writes the directory gpt.files.hf describes:
config.json, model.safetensors and the tokenizer's files, which
`transformers.GPT2LMHeadModel.from_pretrained("out/hf")` loads.
"""
import argparse
import sys

from .errors import UserError
from .files.hf import export_hf
from .files.loading import load_model, open_backend


def export_checkpoint(out_dir, hf_dir):
    """out_dir/ckpt.npz -> a Hugging Face directory hf_dir. Returns the model's config."""
    loaded = load_model(open_backend("cpu", "float32"), out_dir=out_dir)
    options = loaded.checkpoint.meta["options"]
    bpe_files = (options["bpe_vocab"], options["bpe_merges"]) if options.get("bpe_vocab") else None
    try:
        export_hf(loaded.model, hf_dir, loaded.tokenizer, bpe_files)
    except OSError as e:
        raise UserError(f"cannot write {hf_dir}: {e.strerror or e}") from None
    return loaded.model.config


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m gpt.export",
                                description="Export a checkpoint of this project as a Hugging Face GPT-2 directory.")
    p.add_argument("--out-dir", default="out", help="the training run's directory, holding ckpt.npz (default: out)")
    p.add_argument("--hf-dir", required=True, help="directory to write config.json, model.safetensors, ... into")
    args = p.parse_args(argv)
    try:
        cfg = export_checkpoint(args.out_dir, args.hf_dir)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.hf_dir}: GPT-2 with {cfg.n_layer} layers, {cfg.n_head} heads, width {cfg.n_embd}, "
          f"context {cfg.block_size}, vocabulary {cfg.vocab_size}; "
          f"load it with transformers.GPT2LMHeadModel.from_pretrained({args.hf_dir!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Generate text from a trained model, streaming it token by token.

    python sample.py --out-dir out --prompt "ROMEO:"                 # a checkpoint from train.py
    python sample.py --out-dir out --prompt "ROMEO:" --temperature 0 # greedy
    python sample.py --out-dir out --interactive                     # a prompt loop
    python sample.py --init-from hf_dir --prompt "Hello"             # a Hugging Face GPT-2 directory

Every option is listed by `python sample.py --help`. Generation uses a KV cache
(see gpt/generate.py); --no-kv-cache recomputes the whole window for each token instead.
"""
import codecs
import sys

from gpt.data.tokenizers import encode_prompt
from gpt.files.loading import load_model, open_backend
from gpt.generate import generate
from gpt.run.cli import LineParser, number, run_main
from gpt.run.options import add_device_flags
from gpt.run.terminal import TerminalWriter
from minigrad import kernels

DEFAULTS = dict(out_dir="out", init_from=None, prompt="", max_new_tokens=256, temperature=0.8, top_k=None,
                top_p=None, seed=0, num_samples=1, device="auto", kernels="fast", tf32=True, interactive=False,
                no_kv_cache=False)


def build_parser():
    d = DEFAULTS
    p = LineParser(prog="sample.py",
                   description="Sample text from a GPT-2 model trained by train.py (or a Hugging Face GPT-2).")
    p.set_defaults(**d)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--out-dir", help=f"training run directory holding ckpt.npz (default: {d['out_dir']})")
    src.add_argument("--init-from", metavar="HF_DIR",
                     help="a Hugging Face GPT-2 directory (config.json + model.safetensors) instead")
    p.add_argument("--prompt", help="text to continue (default: empty, i.e. the start of a document)")
    p.add_argument("--max-new-tokens", type=number(int, lambda v: v >= 0, ">= 0"),
                   help=f"tokens to generate per sample (default: {d['max_new_tokens']})")
    p.add_argument("--temperature", type=number(float, lambda v: v >= 0, ">= 0 (0 is greedy)"),
                   help=f"divide the logits by this; 0 is greedy (default: {d['temperature']})")
    p.add_argument("--top-k", type=number(int, lambda v: v >= 1, ">= 1"),
                   help="sample only among the k most likely tokens")
    p.add_argument("--top-p", type=number(float, lambda v: 0 < v <= 1, "in (0, 1]"),
                   help="nucleus sampling: only the most likely tokens whose probabilities add up to p")
    p.add_argument("--seed", type=number(int, lambda v: v >= 0, ">= 0"),
                   help=f"random seed; sample i uses seed + i (default: {d['seed']})")
    p.add_argument("--num-samples", type=number(int, lambda v: v >= 1, ">= 1"),
                   help=f"how many samples to draw (default: {d['num_samples']})")
    add_device_flags(p, d)
    p.add_argument("--interactive", action="store_true",
                   help="prompt loop: type a prompt, watch the continuation; an empty line or Ctrl-D exits, "
                        "Ctrl-C stops the current generation")
    p.add_argument("--no-kv-cache", action="store_true",
                   help="recompute the whole window for every token (slow; for comparison)")
    return p


# ----------------------------------------------------------------------------- streaming


class TextStream:
    """Writes tokens to `out` as text the moment they arrive, flushing each one.

    A token can end in the middle of a multi-byte UTF-8 character (a byte-level model emits
    one byte at a time; GPT-2 splits rare characters and emoji over several tokens), so the
    bytes go through an incremental UTF-8 decoder that holds an unfinished character back
    until its remaining bytes arrive. On a terminal `out` is a TerminalWriter, which escapes
    the control characters of each decoded piece (gpt/terminal.py)."""

    def __init__(self, tokenizer, out):
        self.token_bytes = lambda i: tokenizer.decode_bytes([i])
        self.out = out
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def write(self, token):
        self.out.write(self.decoder.decode(self.token_bytes(token)))
        self.out.flush()

    def close(self):
        self.out.write(self.decoder.decode(b"", final=True) + "\n")
        self.out.flush()


def stream_sample(model, tokenizer, prompt_ids, o, seed, out):
    """Generate one sample after prompt_ids and stream it to `out`."""
    text = TextStream(tokenizer, out)
    try:
        for token in generate(model, prompt_ids, o["max_new_tokens"], o["temperature"], o["top_k"], seed=seed,
                              top_p=o["top_p"], eot_token=tokenizer.eot_token, use_cache=not o["no_kv_cache"],
                              vocab_size=tokenizer.vocab_size):
            text.write(token)
    finally:
        text.close()


def interactive(model, tokenizer, o, out):
    """Prompt, stream the continuation, repeat. Empty line or Ctrl-D exits; Ctrl-C stops one generation."""
    print("type a prompt and press Enter; an empty line or Ctrl-D quits, Ctrl-C stops a generation",
          file=sys.stderr)
    seed = o["seed"]
    while True:
        try:
            prompt = input("> ")
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return 0
        if not prompt:
            return 0
        try:
            stream_sample(model, tokenizer, encode_prompt(prompt, tokenizer, model.config.block_size), o, seed, out)
        except KeyboardInterrupt:
            print("[stopped]", file=sys.stderr)
        seed += 1


def run(o):
    backend = open_backend(o["device"], "float32")
    loaded = load_model(backend, out_dir=o["out_dir"], hf_dir=o["init_from"],
                        ops=kernels(backend.name, o["kernels"], tf32=o["tf32"]))
    model, tokenizer = loaded.model, loaded.tokenizer
    out = sys.stdout
    if hasattr(out, "reconfigure"):
        out.reconfigure(errors="replace")    # never fail on a terminal that cannot show a character
    if out.isatty():
        out = TerminalWriter(out)            # show control characters, do not send them (the prompt's too)
    if o["interactive"]:
        return interactive(model, tokenizer, o, out)
    prompt_ids = encode_prompt(o["prompt"], tokenizer, model.config.block_size)
    for i in range(o["num_samples"]):
        if o["num_samples"] > 1:
            out.write(f"--- sample {i + 1} of {o['num_samples']} (seed {o['seed'] + i}) ---\n")
        out.write(o["prompt"])
        stream_sample(model, tokenizer, prompt_ids, o, o["seed"] + i, out)
    return 0


def main(argv=None):
    return run_main(lambda: run(vars(build_parser().parse_args(argv))), interrupted="\ninterrupted",
                    out_of_memory="try --device cpu or a smaller model")


if __name__ == "__main__":
    sys.exit(main())

"""Train a GPT-2-style model on a text corpus.

    python train.py                       # byte-level model on the bundled tiny-shakespeare
    python train.py --data my.txt --preset small --max-steps 5000 --device cuda
    python train.py --resume              # continue the run in --out-dir
    mpirun -np 4 python train.py ...      # the same run on 4 ranks

Every option is listed by `python train.py --help` (gpt/run/options.py). The Trainer below
is the run: a step is zero grads, the micro-batches' forward and backward, the gradient sum
over the ranks and clipping, the AdamW step; the loop around it logs, evaluates, samples and
saves. What it leans on, each in its own module:

    gpt.run.options     TrainConfig, the command line and a checkpoint's saved options
    gpt.parallel.sync   how the ranks' gradients are summed, and whose AdamW state is whose
    gpt.run.files       the run's files, and what a stop leaves behind
    gpt.run.steplog     the loss curve, read back from the device in windows; divergence
    gpt.run.signals     SIGINT/SIGTERM/SIGHUP: finish the step, save, exit
"""
import os
import signal
import sys
from dataclasses import asdict

import numpy as np
from tqdm import tqdm

from bpe.corpus import available_cores
from gpt.data.batches import BatchSampler, split_tokens
from gpt.data.corpus import load_byte_corpus
from gpt.data.token_cache import load_bpe_corpus
from gpt.data.tokenizers import LocalVocab, encode_prompt, make_tokenizer
from gpt.errors import CheckpointError, UsageError, UserError
from gpt.files.checkpoint import digest
from gpt.files.loading import load_model, open_backend
from gpt.generate import generate
from gpt.model import GPT
from gpt.parallel.ranks import EndedAlone, Solo, check_agreement, collectively, run_on_every_rank
from gpt.parallel.sync import gradient_sync
from gpt.parallel.workers import DataParallel, WorkerError, model_buffers, usable_workers
from gpt.run.cli import keep_writing_if_closed, run_main
from gpt.run.files import CACHE_NAME, RunFiles
from gpt.run.memory import check_training_memory
from gpt.run.options import DEFAULT_DATA, TrainConfig, resolve_options
from gpt.run.rundir import claim_out_dir, remove_run_files
from gpt.run.signals import StoppedAtOnce, StopSignals
from gpt.run.steplog import Diverged, StepLog
from gpt.run.terminal import printable
from minigrad import AdamW, kernels, lr_at

__all__ = ["DEFAULT_DATA", "Diverged", "Trainer", "TrainConfig", "main", "resolve_options"]


class Trainer:
    """One training run on this rank: the model, its optimizer, the data, the loop."""

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
        self.rows = world.rows(cfg.batch_size)   # this rank's rows of every batch, n_r of them
        self.n_rows = self.rows.stop - self.rows.start
        self.weight = self.n_rows / cfg.batch_size                          # n_r / B, its weight in a loss
        self.model, self.tokenizer, tokens = build_model(cfg, saved, self.backend, ops, n_workers, world, self.n_rows)
        self.config = self.model.config
        train, val = split_tokens(tokens, cfg.val_fraction, self.config.block_size)
        self.n_tokens = len(tokens)
        self.facts = self._facts(tokens) if world.size > 1 else None   # compared by agree()
        self.train_data = BatchSampler(train, cfg.batch_size, self.config.block_size, cfg.sampling, cfg.seed)
        self.val_data = (BatchSampler(val, cfg.batch_size, self.config.block_size, "random", cfg.seed) if len(val)
                         else None)
        self.workers = DataParallel(self.model, n_workers)
        self.sync = gradient_sync(world, self.model.params.size, cfg.zero)
        owned = self.sync.owned                  # the optimizer's part of the flat buffers
        self.optimizer = AdamW(self.model.params[owned], self.sync.optimizer_grads(self.model.grads),
                               self.model.decay_mask()[owned], betas=(cfg.beta1, cfg.beta2),
                               weight_decay=cfg.weight_decay, ops=ops)
        self.files = RunFiles(cfg.out_dir, writes=world.rank == 0, resumed_from=saved.path if saved else None)
        self.step = 0                            # optimizer steps completed
        self.tokens_per_step = cfg.batch_size * self.config.block_size * cfg.grad_accum
        history, elapsed = ([], 0.0) if saved is None else self._restore(saved)
        self.log = StepLog(self.backend, history, elapsed, self.tokens_per_step, self.files.left, cfg.grad_clip > 0)
        self.stop = None                         # the loop's StopSignals

    # --- a step

    def train_step(self):
        """One optimizer step over grad_accum micro-batches -> (loss, lr, grad norm). The loss
        and the norm stay where they were computed (0-d device arrays on a GPU): the step
        waits for nothing, and the loop reads them back once per --log-interval."""
        cfg, model, accum = self.cfg, self.model, self.cfg.grad_accum
        model.zero_grad()
        losses = []
        for micro in range(accum):
            x, y = self.train_data.get(self.step, micro, accum)
            loss = self.workers.forward_backward(x[self.rows], y[self.rows], dloss=self.weight / accum,
                                                 dropout_seed=self._dropout_seed(self.step, micro),
                                                 first_row=self.rows.start)
            losses.append(loss if self.weight == 1 else loss * self.weight)
        loss = self._summed(losses[0] if accum == 1 else sum(losses) / accum)
        lr = lr_at(self.step, cfg.lr, cfg.min_lr, cfg.warmup_steps, cfg.max_steps)
        norm = self.sync.reduce_and_clip(model.grads, self.optimizer.grads, cfg.grad_clip, model.ops)
        self.optimizer.step(lr)
        self.sync.after_step(model.params)
        return loss, lr, norm

    def _dropout_seed(self, step, micro):
        """The dropout seed of a micro-batch, a pure function of (seed, step, micro): each row's
        masks then depend on its place in the batch, not on which rank or worker trains it."""
        return int(np.random.SeedSequence([self.cfg.seed, step, micro]).generate_state(1, np.uint32)[0])

    def _summed(self, loss):
        """A rank's weighted loss -> the sum over the ranks (0-d, on the loss's device)."""
        if self.world.size == 1:
            return loss
        xp = self.backend.xp
        return self.world.allreduce(xp.reshape(xp.asarray(loss, dtype=self.backend.dtype), (1,)))[0]

    def evaluate(self):
        """The validation loss over --eval-steps fixed batches, each rank its rows' share."""
        losses = [self.workers.loss(x[self.rows], y[self.rows]) * self.weight
                  for x, y in self.val_data.eval_batches(self.cfg.eval_steps)]
        return float(self._summed(sum(losses))) / len(losses)      # one read from the device

    # --- the run

    def run(self):
        """The whole run -> exit status: setup lines, the first sample, the loop, the last sample."""
        cfg = self.cfg
        if cfg.show_window:
            show_window(self.first_window(), self.tokenizer)
            return 0
        os.makedirs(cfg.out_dir, exist_ok=True)      # main() has claimed it (gpt.run.rundir) already
        self._print_setup()
        if self.step == 0:
            if cfg.overwrite and self.world.rank == 0:
                remove_run_files(cfg.out_dir)    # the run is built: the one it replaces goes
            print("first training window:")
            print(printable(self.tokenizer.decode(self.first_window())))
            self.files.write_config(self.config.to_dict(), asdict(cfg))
            self.sample("before training")
        else:
            print(f"resuming from step {self.step} of {cfg.max_steps}")
        if self.step >= cfg.max_steps:
            print(f"nothing to do: the run already has {self.step} steps (raise --max-steps to continue)")
            return 0
        # A diverging run overflows; the step log reports the non-finite loss itself, in one line.
        with StopSignals() as self.stop, np.errstate(over="ignore", invalid="ignore"):
            try:
                status = self._loop()
            except WorkerError as e:              # the steps before it are good: keep them
                raise WorkerError(f"{e}; {self._save_after_fault()}") from None
        if status == 0:
            self.sample("after training")
        return status

    def _loop(self):
        """Steps until --max-steps, a --target-loss or a stop signal; each step's record is read
        back every --log-interval, and every --eval-interval evaluated and saved."""
        cfg = self.cfg
        self.log.restart_window()                 # training time starts here, not at setup
        with tqdm(total=cfg.max_steps, initial=self.step, desc="training", unit="step", dynamic_ncols=True,
                  disable=self.world.rank != 0) as bar:   # the bar ends its line before any error message
            while self.step < cfg.max_steps:
                loss, lr, norm = self.train_step()                 # on the device: not read back yet
                self.step += 1
                record = self.log.add(self.step, loss, lr, norm)
                bar.update(1)
                done = self.step == cfg.max_steps
                stop = self.world.max_int(self.stop.signum or 0) or None    # any rank's signal stops all
                evaluate = self.val_data is not None and (self.step % cfg.eval_interval == 0 or done)
                save = done or stop is not None or self.step % cfg.eval_interval == 0     # every evaluation
                if save or self.step % cfg.log_interval == 0:
                    self._show_progress(bar, record)
                if evaluate:
                    done |= self._validate(bar, record)
                if save:
                    self.save()
                self.log.restart_window()
                if stop is not None:
                    return self._stopped(bar, stop)
                if done:
                    break
        print(f"done: {self.step} steps in {self.log.elapsed:.0f}s; checkpoint {self.files.checkpoint}")
        return 0

    def _show_progress(self, bar, record):
        tokens_per_s = self.log.read_back()                    # the window's losses and norms, at last
        bar.set_postfix(loss=f"{record['train_loss']:.4f}", lr=f"{record['lr']:.2e}",
                        norm=f"{record['grad_norm']:.2f}", tok_s=f"{tokens_per_s:,.0f}")

    def _validate(self, bar, record):
        """The validation loss into the step's record and one line -> whether --target-loss is reached."""
        record["val_loss"] = self.evaluate()
        bar.write(f"step {self.step}: train loss {record['train_loss']:.4f}, val loss {record['val_loss']:.4f}, "
                  f"{self.log.elapsed:.0f}s")
        reached = self.cfg.target_loss is not None and record["val_loss"] <= self.cfg.target_loss
        if reached:
            bar.write(f"reached --target-loss {self.cfg.target_loss} at step {self.step}")
        return reached

    def _stopped(self, bar, signum):
        bar.close()
        print(f"stopped by {signal.Signals(signum).name}: saved step {self.step} to {self.files.checkpoint}; "
              "continue with --resume")
        return 128 + signum

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

    def _print_setup(self):
        cfg, xp, n = self.cfg, self.backend.xp, self.workers.n_workers
        workers = f", {n} worker processes" if n > 1 else ""
        if self.world.size > 1:
            workers += (f"; rank 0 of {self.world.size} MPI ranks, "
                        f"{self.n_rows} of the {cfg.batch_size} rows")
        print(f"device: {self.backend.name} ({xp.__name__} {xp.__version__}, {cfg.dtype}{workers})")
        print(f"model: {self.model}")
        print(f"data: {cfg.data}: {self.n_tokens:,} tokens ({cfg.tokenizer} tokenizer), "
              f"{len(self.train_data.tokens):,} train / "
              f"{len(self.val_data.tokens) if self.val_data else 0:,} validation")
        print(f"tokens per step: {cfg.batch_size} x {self.config.block_size} x {cfg.grad_accum} "
              f"= {self.tokens_per_step:,}")
        if cfg.zero:
            kept = self.optimizer.m.nbytes + self.optimizer.v.nbytes
            print(f"ZeRO stage 1: each rank keeps about 1/{self.world.size} of AdamW's moments "
                  f"(rank 0: {kept / 2**20:,.2f} of {2 * self.model.params.nbytes / 2**20:,.2f} MiB)")

    # --- checkpoints

    def save(self):
        """The checkpoint of this step, with the curve and the plot (rank 0 writes; with --zero 1
        every rank first sends its slice of AdamW's moments)."""
        to_host, state = self.backend.to_host, self.optimizer.state_dict()
        m, v = (self.sync.gather(to_host(state[k])) for k in ("m", "v"))
        self.files.save(self.step, to_host(self.model.params), m, v, self._meta(), self.log.history)

    def _meta(self):
        local = isinstance(self.tokenizer, LocalVocab)
        return {"step": self.step, "config": self.config.to_dict(), "options": asdict(self.cfg),
                "tokenizer": self.tokenizer.identity, "elapsed": self.log.elapsed,
                "local_vocab": self.tokenizer.to_base.tolist() if local else None}

    def _restore(self, checkpoint):
        """The optimizer and progress of a checkpoint (the model's parameters are loaded
        already) -> (its loss curve up to its step, its training seconds)."""
        arrays, meta, owned = checkpoint.arrays, checkpoint.meta, self.sync.owned
        self.optimizer.load_state_dict({"m": self.backend.asarray(arrays["adam_m"][owned]),
                                        "v": self.backend.asarray(arrays["adam_v"][owned]), "t": meta["step"]})
        self.step = meta["step"]
        return [r for r in checkpoint.history if r["step"] <= self.step], meta.get("elapsed", 0.0)

    def _save_after_fault(self):
        """Save the last completed step after a worker process died -> what was saved, in words.
        Under mpirun the other ranks are in the step's collectives: saving would need them."""
        if self.world.size > 1:
            return self.files.left()
        try:
            self.log.read_back()
            self.save()
        except UserError as e:
            return f"could not save the last step ({e})"
        return f"saved step {self.step} to {self.files.checkpoint}: continue with --resume"

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


# ---------------------------------------------------------------------------- assembly


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
    tokens = load_bpe_corpus(cfg.data, base, os.path.join(cfg.out_dir, CACHE_NAME))
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


# ---------------------------------------------------------------------------- the command


def train_on(world, argv):
    """This rank's run -> exit status: options, the claimed --out-dir, the Trainer."""
    cfg, saved = collectively(world, lambda: resolve_options(argv))
    run_dir = None
    if not cfg.show_window:
        run_dir = collectively(world, lambda: claim_out_dir(cfg.out_dir, cfg.resume, cfg.overwrite)
                               if world.rank == 0 else None)       # rank 0 holds the directory's lock
        if saved is not None and saved.changed():      # another run saved before we held the lock
            cfg, saved = collectively(world, lambda: resolve_options(argv))
    try:
        trainer = collectively(world, lambda: Trainer(cfg, saved, world))
        try:
            trainer.agree()
            return trainer.run()
        except KeyboardInterrupt:                      # Ctrl-C outside the loop: the samples
            print(f"\ninterrupted; {trainer.files.left()}", file=sys.stderr)
            raise EndedAlone(130) from None
        except StoppedAtOnce as e:
            print(f"\nstopped at once by a second {signal.Signals(e.signum).name}; {trainer.files.left()}",
                  file=sys.stderr)
            raise EndedAlone(128 + e.signum) from None
        finally:
            trainer.workers.close()
    finally:
        if run_dir is not None:
            run_dir.release()


def main(argv=None):
    with keep_writing_if_closed():               # a closed terminal or `| head` must not stop the run
        return run_on_every_rank(lambda world: train_on(world, argv), run_main, ends_together=(Diverged,),
                                 interrupted="interrupted before training started; nothing was saved",
                                 out_of_memory="lower --batch-size (--grad-accum keeps the tokens per step) or "
                                               "--block-size; the last checkpoint is unchanged")


if __name__ == "__main__":
    sys.exit(main())

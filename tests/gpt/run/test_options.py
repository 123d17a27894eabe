"""gpt.run.options: TrainConfig's fields are the command line, tested directly."""
from dataclasses import asdict, fields

import pytest

from gpt.errors import CheckpointError, UsageError
from gpt.run.options import TrainConfig, build_parser, check_saved, flag_of


def test_every_field_is_a_flag_and_the_kinds_are_the_rules_of_resume():
    help_text = build_parser().format_help()
    assert all(flag_of(f) + " " in help_text or flag_of(f) + "\n" in help_text for f in fields(TrainConfig))
    assert TrainConfig.of_kind("model") == ("n_layer", "n_head", "n_embd", "block_size", "dropout", "vocab_size")
    assert set(TrainConfig.of_kind("session")) == {"out_dir", "resume", "overwrite", "show_window"}
    assert set(TrainConfig.of_kind("run")) == {"tokenizer", "bpe_vocab", "bpe_merges", "local_vocab", "seed",
                                               "batch_size", "grad_accum", "sampling", "val_fraction", "dtype"}


def test_flags_not_given_are_absent_and_defaults_are_the_fields():
    given = vars(build_parser().parse_args(["--lr", "0.01", "--no-tf32", "--local-vocab"]))
    assert given == {"lr": 0.01, "tf32": False, "local_vocab": True}
    assert asdict(TrainConfig())["lr"] == 2e-3 and TrainConfig().tf32 is True
    with pytest.raises(UsageError, match="--batch-size: must be > 0"):
        build_parser().parse_args(["--batch-size", "0"])


@pytest.mark.parametrize("key, value", [("lr", -1.0), ("lr", "0.1"), ("tf32", "yes"), ("sampling", "spiral"),
                                        ("batch_size", True), ("prompt", "a\0b"), ("zero", 2)])
def test_saved_options_are_held_to_their_flags(key, value):
    with pytest.raises(CheckpointError, match=f"saved option {key} = "):
        check_saved({key: value}, "ckpt.npz")
    good = asdict(TrainConfig())
    assert check_saved(good, "ckpt.npz") is good

"""Model configuration and the named presets."""
from dataclasses import asdict, dataclass, fields

# name: (n_layer, n_head, n_embd, block_size)
PRESETS = {
    "tiny": (2, 4, 128, 128),           # CPU debugging and tests
    "mini": (4, 4, 128, 128),           # train.py's default: tiny-shakespeare in ~3 CPU minutes
    "small": (4, 4, 256, 256),
    "medium": (6, 6, 384, 256),
    "gpt2": (12, 12, 768, 1024),        # 124M with the 50,257-token vocabulary
    "gpt2-medium": (24, 16, 1024, 1024),
    "gpt2-large": (36, 20, 1280, 1024),
    "gpt2-xl": (48, 25, 1600, 1024),
}


@dataclass
class GPTConfig:
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    block_size: int = 1024      # context window T_max (rows of wpe)
    vocab_size: int = 50257     # real tokens; the output head may be padded (padded_vocab_size)
    dropout: float = 0.0

    @classmethod
    def preset(cls, name, **overrides):
        n_layer, n_head, n_embd, block_size = PRESETS[name]
        cfg = cls(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size)
        return cfg.replace(**{k: v for k, v in overrides.items() if v is not None})

    def replace(self, **changes):
        return GPTConfig(**{**asdict(self), **changes})

    @property
    def padded_vocab_size(self):
        """vocab_size rounded up to a multiple of 64 (faster matmuls; the padding rows stay
        zero and the loss ignores them)."""
        return -(-self.vocab_size // 64) * 64

    def validate(self):
        """Raise ValueError with a one-line reason if the configuration cannot work."""
        for name in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"--n-embd ({self.n_embd}) must be divisible by --n-head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"--dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        return cls(**{f.name: d[f.name] for f in fields(cls)})

"""The ArBG network: a decoder-only causal transformer over model coordinates.

Position ``j`` reads the token (bin index) and continuous features of coordinate ``j - 1``
(a begin token at ``j = 0``) plus embeddings that say what coordinate ``j`` is (its index, and
categorical features such as the atom's element and the coordinate's role), and outputs logits
over the bins of coordinate ``j``. RMSNorm, SwiGLU, causal scaled-dot-product attention and a
KV cache for sampling one coordinate at a time.
"""

from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["TransformerConfig", "CausalTransformer"]


@dataclass
class TransformerConfig:
    """Network size and shape.

    Parameters
    ----------
    n_positions : int
        Number of model coordinates ``D``.
    vocab_size : int
        Tokens per coordinate (bins + 2 tails).
    n_layer, n_head, d_model : int
        Depth, attention heads, width.
    d_hidden : int
        SwiGLU hidden width (0: ``8/3 d_model`` rounded up to a multiple of 32).
    feature_sizes : list of int
        Number of values of each categorical per-position feature.
    n_input_features : int
        Continuous features per coordinate fed to the next position.
    dropout : float
    """

    n_positions: int
    vocab_size: int
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128
    d_hidden: int = 0
    feature_sizes: list = field(default_factory=list)
    n_input_features: int = 3
    dropout: float = 0.0

    def __post_init__(self):
        if self.d_model % self.n_head:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})")
        if not self.d_hidden:
            self.d_hidden = 32 * ((8 * self.d_model // 3 + 31) // 32)

    def to_dict(self):
        return asdict(self)


class SelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.dropout = cfg.dropout

    def forward(self, x, cache=None):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        past = 0
        if cache is not None:
            if cache.get("k") is not None:
                past = cache["k"].shape[2]
                k = torch.cat([cache["k"], k], dim=2)
                v = torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        if past and T > 1:
            raise ValueError("the KV cache takes one new position at a time")
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=(past == 0 and T > 1), dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class SwiGLU(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.gate = nn.Linear(cfg.d_model, cfg.d_hidden, bias=False)
        self.up = nn.Linear(cfg.d_model, cfg.d_hidden, bias=False)
        self.down = nn.Linear(cfg.d_hidden, cfg.d_model, bias=False)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.drop(self.down(F.silu(self.gate(x)) * self.up(x)))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.norm1 = nn.RMSNorm(cfg.d_model)
        self.attn = SelfAttention(cfg)
        self.norm2 = nn.RMSNorm(cfg.d_model)
        self.mlp = SwiGLU(cfg)

    def forward(self, x, cache=None):
        x = x + self.attn(self.norm1(x), cache)
        return x + self.mlp(self.norm2(x))


class CausalTransformer(nn.Module):
    """Logits over the bins of each coordinate given the preceding ones.

    Parameters
    ----------
    cfg : TransformerConfig
    position_features : torch.LongTensor, shape (D, len(cfg.feature_sizes))
        Categorical features of each coordinate (e.g. element, role).
    token_mask : torch.BoolTensor, shape (D, vocab_size)
        Tokens allowed at each coordinate (tails outside a bound are masked).
    """

    def __init__(self, cfg, position_features, token_mask):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.begin_token = cfg.vocab_size
        self.token_embedding = nn.Embedding(cfg.vocab_size + 1, d)
        self.value_embedding = nn.Linear(cfg.n_input_features, d)
        self.position_embedding = nn.Embedding(cfg.n_positions, d)
        self.feature_embeddings = nn.ModuleList(nn.Embedding(n, d) for n in cfg.feature_sizes)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = nn.RMSNorm(d)
        self.head = nn.Linear(d, cfg.vocab_size, bias=False)
        self.register_buffer("position_features", torch.as_tensor(position_features, dtype=torch.long))
        self.register_buffer("token_mask", torch.as_tensor(token_mask, dtype=torch.bool))
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # scaled init of residual projections (GPT-2)
            if name.endswith("proj.weight") or name.endswith("down.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / (2 * cfg.n_layer) ** 0.5)

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def n_parameters(self):
        return sum(p.numel() for p in self.parameters())

    def forward(self, prev_tokens, prev_features, start=0, cache=None):
        """Masked logits for coordinates ``start .. start + T - 1``.

        Parameters
        ----------
        prev_tokens : torch.LongTensor, shape (B, T)
            Token of the preceding coordinate (``begin_token`` before coordinate 0).
        prev_features : torch.Tensor, shape (B, T, n_input_features)
            Continuous features of the preceding coordinate (zeros before coordinate 0).
        start : int
            Index of the first coordinate predicted.
        cache : list of dict, optional
            One dict per layer, filled and extended in place (KV cache).

        Returns
        -------
        torch.Tensor, shape (B, T, vocab_size), float32, ``-inf`` on masked tokens.
        """
        T = prev_tokens.shape[1]
        idx = torch.arange(start, start + T, device=prev_tokens.device)
        x = self.token_embedding(prev_tokens) + self.value_embedding(prev_features)
        x = x + self.position_embedding(idx)[None]
        for f, emb in enumerate(self.feature_embeddings):
            x = x + emb(self.position_features[idx, f])[None]
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, None if cache is None else cache[i])
        logits = self.head(self.norm(x)).float()
        return logits.masked_fill(~self.token_mask[idx][None], float("-inf"))

    def new_cache(self):
        return [dict() for _ in self.blocks]

"""The ArBG network: a decoder-only causal transformer over model coordinates.

The network holds only sizes and weights; everything about the molecule enters :meth:`forward`.
Position ``t`` of a sequence reads the token (bin index) and continuous values of the preceding
coordinate (a begin token at ``t = 0``) plus categorical features that say what the coordinate
predicted at ``t`` is (element, coordinate kind and role, ...), and outputs logits over that
coordinate's tokens. Positional information is either a learned table of ``max_positions``
(any molecule with at most that many coordinates) or rotary embeddings (RoPE, any length).
RMSNorm, SwiGLU, causal scaled-dot-product attention and a KV cache for sampling one coordinate at
a time.

A batch may hold molecules of different lengths, padded on the right: with causal attention a
position never attends to later ones, so padding changes nothing at the real positions; the
caller ignores the outputs at padded positions.
"""

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..utils import Settings

__all__ = ["NetworkConfig", "CausalTransformer", "POSITION_ENCODINGS"]

POSITION_ENCODINGS = ("learned", "rope")


@dataclass
class NetworkConfig(Settings):
    """Network size and shape (nothing about any molecule except table sizes).

    Parameters
    ----------
    n_layer, n_head, d_model : int
        Depth, attention heads, width.
    d_hidden : int
        SwiGLU hidden width (0: ``8/3 d_model`` rounded up to a multiple of 32).
    dropout : float
        Dropout probability while training (densities are always evaluated without dropout).
    position_encoding : {"learned", "rope"}
        A learned table of ``max_positions`` entries, or rotary embeddings (any length).
    max_positions : int
        Size of the learned position table (0: set to the first molecule's coordinate count).
    vocab_size : int
        Tokens per coordinate: bins + 2 tails (0: set from the first molecule's bins).
    feature_sizes : list of int
        Number of values of each categorical per-coordinate feature.
    n_input_features : int
        Continuous values of each coordinate fed to the next position.
    context_sizes : list of int
        Number of values of each categorical feature of the molecule's context tokens (for a
        peptide: residue type and index); empty for none. With a context, a non-causal encoder
        layer reads the tokens and every block cross-attends to them (transferable models).
    """

    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128
    d_hidden: int = 0
    dropout: float = 0.0
    position_encoding: str = "learned"
    max_positions: int = 0
    vocab_size: int = 0
    feature_sizes: list = field(default_factory=list)
    n_input_features: int = 3
    context_sizes: list = field(default_factory=list)

    what = "network settings"

    def __post_init__(self):
        for name in ("n_layer", "n_head", "d_model"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"network setting {name} must be a positive integer; got {getattr(self, name)!r}")
        if self.d_model % self.n_head:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {self.dropout!r}")
        if self.position_encoding not in POSITION_ENCODINGS:
            raise ValueError(f"position_encoding must be one of {POSITION_ENCODINGS}; got {self.position_encoding!r}")
        if self.position_encoding == "rope" and (self.d_model // self.n_head) % 2:
            raise ValueError("rotary position encoding needs an even head width d_model / n_head")
        if not self.d_hidden:
            self.d_hidden = 32 * ((8 * self.d_model // 3 + 31) // 32)
        self.feature_sizes = [int(n) for n in self.feature_sizes]
        self.context_sizes = [int(n) for n in self.context_sizes]



def _rotate(x, positions):
    """Rotary position embedding of ``x`` (B, H, T, hd) at ``positions`` (B or 1, T)."""
    half = x.shape[-1] // 2
    freq = 1.0 / (10000.0 ** (torch.arange(half, device=x.device, dtype=torch.float32) / half))
    angle = positions[:, None, :, None].float() * freq  # (B, 1, T, half)
    cos, sin = torch.cos(angle).to(x.dtype), torch.sin(angle).to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class SelfAttention(nn.Module):
    def __init__(self, cfg, causal=True):
        super().__init__()
        self.n_head = cfg.n_head
        self.causal = causal
        self.rope = cfg.position_encoding == "rope" and causal
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.dropout = cfg.dropout

    @staticmethod
    def _grow(cache, k, length):
        """(Re)allocate a layer's key and value buffers for ``max(length, capacity)`` positions,
        keeping what they hold: one allocation per generation when the capacity is known."""
        B, H, _, hd = k.shape
        size = max(length, cache.get("capacity") or 0)
        for key in ("k", "v"):
            buf = k.new_empty((B, H, size, hd))
            if cache.get(key) is not None:
                buf[:, :, : cache["length"]] = cache[key][:, :, : cache["length"]]
            cache[key] = buf

    def forward(self, x, positions, cache=None):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if self.rope:
            q, k = _rotate(q, positions), _rotate(k, positions)
        past = 0
        if cache is not None:
            past = cache["length"]
            if past and T > 1:
                raise ValueError("the KV cache takes one new position at a time after the first call")
            if cache.get("k") is None or past + T > cache["k"].shape[2]:
                self._grow(cache, k, past + T)
            cache["k"][:, :, past : past + T] = k
            cache["v"][:, :, past : past + T] = v
            cache["length"] = past + T
            k, v = cache["k"][:, :, : past + T], cache["v"][:, :, : past + T]
        if past:  # one new position attends to every cached one (a plain product: faster on CPU
            # than the fused kernel for one query, and reads the cache views without a copy)
            att = torch.softmax((q @ k.transpose(-2, -1)) * (C // self.n_head) ** -0.5, dim=-1)
            y = att @ v
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, is_causal=self.causal and T > 1, dropout_p=self.dropout if self.training else 0.0
            )
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class CrossAttention(nn.Module):
    """Each position attends to all context tokens (no mask, no cache: the context is short)."""

    def __init__(self, cfg):
        super().__init__()
        self.n_head = cfg.n_head
        self.q = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.kv = nn.Linear(cfg.d_model, 2 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.dropout = cfg.dropout

    def forward(self, x, context):
        B, T, C = x.shape
        R, H = context.shape[1], self.n_head
        q = self.q(x).view(B, T, H, C // H).transpose(1, 2)
        k, v = self.kv(context).split(C, dim=2)
        k, v = (t.view(t.shape[0], R, H, C // H).transpose(1, 2).expand(B, -1, -1, -1) for t in (k, v))
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
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
    def __init__(self, cfg, causal=True, cross=False):
        super().__init__()
        self.norm1 = nn.RMSNorm(cfg.d_model)
        self.attn = SelfAttention(cfg, causal)
        if cross:
            self.norm_cross = nn.RMSNorm(cfg.d_model)
            self.cross = CrossAttention(cfg)
        self.norm2 = nn.RMSNorm(cfg.d_model)
        self.mlp = SwiGLU(cfg)

    def forward(self, x, positions, cache=None, context=None):
        x = x + self.attn(self.norm1(x), positions, cache)
        if context is not None:
            x = x + self.cross(self.norm_cross(x), context)
        return x + self.mlp(self.norm2(x))


class CausalTransformer(nn.Module):
    """Logits over the tokens of each coordinate given the preceding coordinates.

    Parameters
    ----------
    cfg : NetworkConfig
        ``vocab_size`` must be set (> 0); with learned positions, ``max_positions`` too.
    """

    def __init__(self, cfg):
        super().__init__()
        if cfg.vocab_size < 3:
            raise ValueError(f"vocab_size must be at least 3 (bins + 2 tails); got {cfg.vocab_size}")
        if cfg.position_encoding == "learned" and cfg.max_positions < 1:
            raise ValueError("a learned position table needs max_positions >= 1")
        self.cfg = cfg
        d = cfg.d_model
        self.begin_token = cfg.vocab_size
        self.token_embedding = nn.Embedding(cfg.vocab_size + 1, d)
        self.value_embedding = nn.Linear(cfg.n_input_features, d)
        if cfg.position_encoding == "learned":
            self.position_embedding = nn.Embedding(cfg.max_positions, d)
        self.feature_embeddings = nn.ModuleList(nn.Embedding(n, d) for n in cfg.feature_sizes)
        if cfg.context_sizes:
            self.context_embeddings = nn.ModuleList(nn.Embedding(n, d) for n in cfg.context_sizes)
            self.context_encoder = Block(cfg, causal=False)
            self.context_norm = nn.RMSNorm(d)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, cross=bool(cfg.context_sizes)) for _ in range(cfg.n_layer))
        self.norm = nn.RMSNorm(d)
        self.head = nn.Linear(d, cfg.vocab_size, bias=False)
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

    def check_inputs(self, n_coords, features, context=None):
        """Raise ``ValueError`` if a molecule with ``n_coords`` coordinates, categorical
        ``features`` (n_coords, F) and ``context`` tokens (R, len(context_sizes)) cannot be read by
        this network."""
        cfg = self.cfg
        if bool(cfg.context_sizes) != (context is not None):
            raise ValueError("this network reads a context (a sequence) with every molecule; give one" if cfg.context_sizes
                             else "this network reads no context; the molecule comes with one")
        if context is not None:
            if context.ndim != 2 or context.shape[1] != len(cfg.context_sizes) or len(context) == 0:
                raise ValueError(f"the context must have shape (R >= 1, {len(cfg.context_sizes)}); got {tuple(context.shape)}")
            for f, size in enumerate(cfg.context_sizes):
                if int(context[:, f].max()) >= size or int(context[:, f].min()) < 0:
                    raise ValueError(f"context feature {f} takes values outside the network's {size}")
        if cfg.position_encoding == "learned" and n_coords > cfg.max_positions:
            raise ValueError(
                f"the molecule has {n_coords} model coordinates but this network's learned position table has "
                f"{cfg.max_positions}; use a network with position_encoding='rope' or a larger max_positions"
            )
        if features.shape[1] != len(cfg.feature_sizes):
            raise ValueError(f"the molecule has {features.shape[1]} coordinate features; the network reads {len(cfg.feature_sizes)}")
        for f, size in enumerate(cfg.feature_sizes):
            if len(features) and int(features[:, f].max()) >= size:
                raise ValueError(
                    f"coordinate feature {f} takes value {int(features[:, f].max())}, beyond the network's {size} values"
                )

    def encode_context(self, context):
        """Context tokens (B or 1, R, len(context_sizes)) -> encoded (B or 1, R, d_model)."""
        c = sum(emb(context[..., f]) for f, emb in enumerate(self.context_embeddings))
        return self.context_norm(self.context_encoder(c, None))

    def forward(self, prev_tokens, prev_values, features, positions, cache=None, context=None):
        """Logits (unmasked) for the coordinates at ``positions``.

        Parameters
        ----------
        prev_tokens : torch.LongTensor, shape (B, T)
            Token of the preceding coordinate (``begin_token`` before coordinate 0).
        prev_values : torch.Tensor, shape (B, T, n_input_features)
            Continuous values of the preceding coordinate (zeros before coordinate 0).
        features : torch.LongTensor, shape (B or 1, T, len(feature_sizes))
            Categorical features of the coordinates predicted.
        positions : torch.LongTensor, shape (B or 1, T)
            Index of each predicted coordinate in its molecule.
        cache : list of dict, optional
            One dict per layer, filled and extended in place (KV cache, see :meth:`new_cache`).
        context : torch.LongTensor, shape (B or 1, R, len(context_sizes)), optional
            The molecule's context tokens; required exactly when ``context_sizes`` is set.

        Returns
        -------
        torch.Tensor, shape (B, T, vocab_size), float32
        """
        x = self.token_embedding(prev_tokens) + self.value_embedding(prev_values)
        if self.cfg.position_encoding == "learned":
            x = x + self.position_embedding(positions)
        for f, emb in enumerate(self.feature_embeddings):
            x = x + emb(features[..., f])
        x = self.drop(x)
        if bool(self.cfg.context_sizes) != (context is not None):
            raise ValueError("this network needs the molecule's context" if self.cfg.context_sizes else "this network reads no context")
        encoded = None
        if context is not None:  # encoded once per KV-cache generation (the molecule's context does not change)
            if cache is not None and cache[0].get("context") is not None:
                encoded = cache[0]["context"]
            else:
                encoded = self.encode_context(context)
                if cache is not None:
                    cache[0]["context"] = encoded
        for i, block in enumerate(self.blocks):
            x = block(x, positions, None if cache is None else cache[i], encoded)
        return self.head(self.norm(x)).float()

    def new_cache(self, capacity=None):
        """An empty KV cache: one dict per layer. ``capacity`` (positions) preallocates the key
        and value buffers at the first call, so generation never copies them (they grow by
        reallocation if more positions arrive)."""
        return [dict(length=0, capacity=capacity) for _ in self.blocks]

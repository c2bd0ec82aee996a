"""Exact autoregressive density over model coordinates: discretizer + causal transformer.

``log q(z) = sum_j [ log P_tau(token_j | z_<j) + log p(z_j | token_j) ]`` where ``P_tau`` is the
softmax of the network's logits divided by the temperature ``tau``. :meth:`sample` (KV cache, one
coordinate at a time) and :meth:`log_prob` (one forward pass) compute the same quantity from the
same tempered conditionals, in float64 from the logits on.
"""

import math

import torch
import torch.nn as nn

from .network import CausalTransformer, TransformerConfig

__all__ = ["AutoregressiveDensity"]


class AutoregressiveDensity(nn.Module):
    """Density over ``D`` model coordinates.

    Parameters
    ----------
    discretizer : Discretizer
    config : TransformerConfig or dict
        Network size; ``n_positions`` and ``vocab_size`` are taken from the discretizer.
    position_features : array_like of int, shape (D, F), optional
        Categorical features of each coordinate; default none.
    """

    def __init__(self, discretizer, config=None, position_features=None):
        super().__init__()
        self.discretizer = discretizer
        D = discretizer.n_coords
        if position_features is None:
            position_features = torch.zeros((D, 0), dtype=torch.long)
        position_features = torch.as_tensor(position_features, dtype=torch.long)
        cfg = dict(config.to_dict() if isinstance(config, TransformerConfig) else (config or {}))
        cfg.update(n_positions=D, vocab_size=discretizer.vocab_size)
        needed = [int(position_features[:, f].max()) + 1 for f in range(position_features.shape[1])]
        given = cfg.get("feature_sizes") or []
        if len(given) != len(needed) or any(g < n for g, n in zip(given, needed)):
            cfg["feature_sizes"] = needed
        self.config = TransformerConfig(**cfg)
        self.network = CausalTransformer(self.config, position_features, discretizer.token_mask)

    @property
    def device(self):
        return self.network.head.weight.device

    @property
    def n_coords(self):
        return self.discretizer.n_coords

    def _shifted_inputs(self, tokens, features):
        B = tokens.shape[0]
        begin = torch.full((B, 1), self.network.begin_token, dtype=torch.long, device=tokens.device)
        prev_tokens = torch.cat([begin, tokens[:, :-1]], dim=1)
        prev_features = torch.cat([features.new_zeros((B, 1, features.shape[2])), features[:, :-1]], dim=1)
        return prev_tokens, prev_features

    def log_prob_terms(self, z, temperature=1.0):
        """Per-coordinate log density terms, shape (n, D), float64 (one forward pass).

        Term ``j`` is ``log P_tau(token_j | z_<j) + log p(z_j | token_j)``; ``-inf`` where ``z_j``
        is outside its coordinate's support.
        """
        _check_temperature(temperature)
        z = z.to(device=self.device, dtype=torch.float64)
        z = self.discretizer.wrap(z)
        tokens, log_within = self.discretizer.tokenize(z)
        prev_tokens, prev_features = self._shifted_inputs(tokens, self.discretizer.features(z))
        logits = self.network(prev_tokens, prev_features)
        # float64 for evaluation (exact log q); float32 while training (speed; gradients only)
        if not torch.is_grad_enabled():
            logits = logits.double()
        logits = logits / temperature
        log_token = logits.gather(-1, tokens[..., None])[..., 0] - torch.logsumexp(logits, dim=-1)
        return log_token.double() + log_within

    def forward(self, z, temperature=1.0):
        """Same as :meth:`log_prob_terms` (so DistributedDataParallel can wrap the density)."""
        return self.log_prob_terms(z, temperature)

    def log_prob(self, z, temperature=1.0):
        """``log q(z)`` in nats, shape (n,), float64."""
        return self.log_prob_terms(z, temperature).sum(1)

    @torch.no_grad()
    def sample(self, n, temperature=1.0, generator=None, kv_cache=True):
        """Draw ``n`` samples with the KV cache.

        Parameters
        ----------
        n : int
        temperature : float
            Logits are divided by ``temperature``; the returned log q is that of the tempered model.
        generator : torch.Generator, optional
            On the model's device, for reproducible draws.
        kv_cache : bool
            Reuse attention keys and values (default). ``False`` recomputes the whole prefix at
            every coordinate (same result, for benchmarks and checks).

        Returns
        -------
        z : torch.Tensor, shape (n, D), float64
        log_q : torch.Tensor, shape (n,), float64
        """
        _check_temperature(temperature)
        dev = self.device
        disc = self.discretizer
        D = self.n_coords
        cache = self.network.new_cache()
        prev_tok = torch.full((n, 1), self.network.begin_token, dtype=torch.long, device=dev)
        prev_feat = torch.zeros((n, 1, self.config.n_input_features), device=dev)
        z = torch.empty((n, D), dtype=torch.float64, device=dev)
        log_q = torch.zeros(n, dtype=torch.float64, device=dev)
        was_training = self.training
        self.eval()
        try:
            all_tok, all_feat = prev_tok, prev_feat
            for j in range(D):
                if kv_cache:
                    logits = self.network(prev_tok, prev_feat, start=j, cache=cache)[:, -1]
                else:
                    logits = self.network(all_tok, all_feat)[:, -1]
                logp = torch.log_softmax(logits.double() / temperature, dim=-1)
                tok = torch.multinomial(logp.exp(), 1, generator=generator)[:, 0]
                u = torch.rand(n, dtype=torch.float64, device=dev, generator=generator)
                u = u.clamp(1e-12, 1 - 1e-12)
                zj, log_within = disc.dequantize(tok, u, j)
                z[:, j] = zj
                log_q += logp.gather(-1, tok[:, None])[:, 0] + log_within
                prev_tok = tok[:, None]
                prev_feat = disc.features(z[:, j : j + 1], cols=slice(j, j + 1))
                if not kv_cache:
                    all_tok = torch.cat([all_tok, prev_tok], dim=1)
                    all_feat = torch.cat([all_feat, prev_feat], dim=1)
        finally:
            self.train(was_training)
        return z, log_q


def _check_temperature(temperature):
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive finite number; got {temperature!r}")

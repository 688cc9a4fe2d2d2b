"""Networks over windows of multivariate series, (B, F, T): a 1-D convolutional autoencoder and a
GPT-2-style transformer stack. Both return a reconstruction of the window of the same shape.

Sizes are validated before anything is allocated, so a damaged checkpoint header asking for a
billion layers is refused (``checkpoints.build_checked``) instead of hanging.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

MAX_WIDTH = 4096
MAX_LAYERS = 48


def _check(name: str, value: int, high: int, low: int = 1) -> int:
    if not low <= int(value) <= high:
        raise ValueError(f"{name} must lie in [{low}, {high}], got {value}")
    return int(value)


class SeriesConvAE(nn.Module):
    """A small convolutional autoencoder over time, features as channels.

    Encoder: one stride-2 conv per width (kernel 5), then a 1x1 conv down to ``latent`` channels, so the
    code is ``latent`` x T / 2^len(widths) numbers (200 for 8 x 100 windows: a 4x bottleneck, which is
    what keeps an autoencoder from learning the identity and reconstructing anomalies too)."""

    def __init__(self, n_features: int, widths: tuple[int, ...] = (32, 64), latent: int = 8, kernel: int = 5):
        super().__init__()
        _check("n_features", n_features, 1_000_000)
        widths = tuple(_check("width", w, MAX_WIDTH) for w in widths)
        _check("latent", latent, MAX_WIDTH)
        _check("kernel", kernel, 31)
        pad = kernel // 2
        down: list[nn.Module] = []
        c = n_features
        for w in widths:
            down += [nn.Conv1d(c, w, kernel, stride=2, padding=pad), nn.LeakyReLU(0.1)]
            c = w
        down.append(nn.Conv1d(c, latent, 1))
        up: list[nn.Module] = [nn.Conv1d(latent, c, 1), nn.LeakyReLU(0.1)]
        for w in reversed(widths):
            up += [nn.Upsample(scale_factor=2), nn.Conv1d(c, w, kernel, padding=pad), nn.LeakyReLU(0.1)]
            c = w
        up.append(nn.Conv1d(c, n_features, kernel, padding=pad))
        self.encoder, self.decoder = nn.Sequential(*down), nn.Sequential(*up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.decoder(self.encoder(x))
        if out.shape[-1] != x.shape[-1]:
            out = F.interpolate(out, size=x.shape[-1], mode="linear", align_corners=False)
        return out


def gpt2_config(d_model: int, layers: int, heads: int, positions: int) -> Any:
    """A ``transformers.GPT2Config`` without token vocabulary (inputs are embedded sensor readings)."""
    try:
        from transformers import GPT2Config
    except ImportError as e:
        raise ImportError("the GPT-2 series detector needs `transformers`. Fix: pip install transformers "
                          "(or pip install 'anomalens[series]')") from e
    _check("d_model", d_model, MAX_WIDTH)
    _check("layers", layers, MAX_LAYERS)
    _check("heads", heads, 64)
    _check("positions", positions, 100_000)
    if d_model % heads:
        raise ValueError(f"d_model {d_model} is not divisible by heads {heads}")
    return GPT2Config(n_embd=d_model, n_layer=layers, n_head=heads, n_positions=positions, vocab_size=1,
                      bos_token_id=0, eos_token_id=0, embd_pdrop=0.0, resid_pdrop=0.0, attn_pdrop=0.0)


def load_pretrained_gpt2(source: str | Path, layers: int) -> Any:
    """GPT-2 weights from a local folder or a hub id (online users), keeping the first ``layers`` blocks
    (AR-Pro uses the first 6) and dropping the 50,257-token embedding, which sensor readings never use."""
    from transformers import GPT2Model

    model = GPT2Model.from_pretrained(str(source))
    model.h = model.h[:layers]
    model.config.n_layer = layers
    model.wte = nn.Embedding(1, model.config.n_embd)
    model.config.vocab_size = 1
    return model


class GPT2Reconstructor(nn.Module):
    """A causal GPT-2 stack that reconstructs each step of a window from the steps before it.

    Readings of step t are embedded (linear, F -> d_model) and fed at position t + 1 after a learned
    start token, so the output at position t sees x_0 .. x_{t-1} only. A causal transformer fed x_t at
    position t would copy it through the residual stream and reconstruct every anomaly perfectly; one
    step of shift makes the reconstruction an honest prediction from context, and the squared error per
    feature and step the unit-variance Gaussian analogue of a language model's per-token surprisal
    (AR-Pro, Example 2.4)."""

    def __init__(self, n_features: int, window: int, d_model: int = 64, layers: int = 2, heads: int = 4,
                 positions: int | None = None, backbone: nn.Module | None = None):
        super().__init__()
        _check("n_features", n_features, 1_000_000)
        from transformers import GPT2Model

        positions = positions or window
        _check("window", window, positions)
        self.gpt2 = backbone if backbone is not None else GPT2Model(gpt2_config(d_model, layers, heads, positions))
        self.gpt2.config.use_cache = False
        d_model = self.gpt2.config.n_embd
        self.embed = nn.Linear(n_features, d_model)
        self.start = nn.Parameter(torch.zeros(d_model))
        self.head = nn.Linear(d_model, n_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x.transpose(1, 2))  # (B, T, d)
        start = self.start.expand(len(x), 1, -1)
        hidden = self.gpt2(inputs_embeds=torch.cat([start, tokens[:, :-1]], 1)).last_hidden_state
        return self.head(hidden).transpose(1, 2)

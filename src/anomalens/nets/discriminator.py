"""The discriminator D of the CE paper (appendix E.1): four spectral-norm residual blocks (64, 128,
256, 512 kernels; the first three halve the size), ReLU, spatial sum, linear to a scalar.

``conditions > 0`` adds a projection term (Miyato & Koyama 2018): D(x, c) = psi(h) + <e_c, h>.
Conditioned on "normal" vs "anomalous", D must reject a counterfactual that does not look like a
*normal* sample, not merely like some sample of the data; condition -1 means unconditional.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import Tensor, nn

from anomalens.nets.blocks import ResBlock, global_sum, sn


@dataclass
class DiscriminatorConfig:
    channels: int = 1
    widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    conditions: int = 0  # 0: the paper's unconditional D; 2: projection on normal / anomalous
    halvings: int = 3  # blocks that halve the size: 3 for images; fewer for a 7x7 latent code


class Discriminator(nn.Module):
    def __init__(self, config: DiscriminatorConfig):
        super().__init__()
        self.config = config
        w = config.widths
        down = [i < config.halvings for i in range(3)]
        self.blocks = nn.Sequential(ResBlock(config.channels, w[0], down[0], preactivate=False),
                                    ResBlock(w[0], w[1], down[1]), ResBlock(w[1], w[2], down[2]),
                                    ResBlock(w[2], w[3], down=False))
        self.linear = sn(nn.Linear(w[3], 1))
        self.embed = sn(nn.Embedding(config.conditions, w[3])) if config.conditions else None

    def forward(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        h = global_sum(self.blocks(x * 2 - 1))
        out = self.linear(h).squeeze(1)
        if self.embed is not None and condition is not None:
            known = condition >= 0
            projection = (self.embed(condition.clamp(min=0)) * h).sum(1)
            out = out + projection * known
        return out

    def describe(self) -> dict[str, object]:
        return asdict(self.config)

"""A DDPM of normal windows of multivariate series, the prior with which AR-Pro repairs them.

Everything but the network and the value range is the image model's (``diffusion.DiffusionModel``):
the schedule, the EMA weights used for inference, training on the library's loop with checkpoints
and resume, the safetensors file. Windows travel as one-channel images (1, F, T) like everywhere
else; the noise predictor is diffusers' ``UNet1DModel`` in its temporal-ResNet form (the "Diffuser"
planning UNet of Janner et al. 2022: convolutions over time, features as channels), built from a
config, nothing downloaded. AR-Pro itself uses Diffusion-TS, a transformer; a convolutional UNet of
the same role trains in minutes on a CPU.

Values are z-scores, not [0, 1]: model space is ``x / scale`` (scale 3 by default), so the
sampler's and the repair's clipping to [-1, 1] keeps a repair within 3 normal standard deviations,
while the input outside the repaired region is never clipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

from anomalens.errors import ConfigError
from anomalens.explain.diffusion import DiffusionConfig, DiffusionModel

try:
    from diffusers import UNet1DModel
    from diffusers.models.unets.unet_1d import UNet1DOutput
except ImportError as e:  # the same optional dependency as the image model
    raise ImportError("the diffusion model needs the `diffusers` package. Fix: pip install diffusers") from e

# Channel widths per level (time halves between levels), residual blocks per level, GroupNorm groups.
SERIES_PROFILES: dict[str, dict[str, Any]] = {
    "paper": {"block_out_channels": (64, 128, 256), "layers_per_block": 2, "norm_groups": 8},
    "cpu": {"block_out_channels": (32, 64, 64), "layers_per_block": 1, "norm_groups": 8},
    "tiny": {"block_out_channels": (16, 32), "layers_per_block": 1, "norm_groups": 8},
}


@dataclass
class SeriesDiffusionConfig(DiffusionConfig):
    """``DiffusionConfig`` for windows (1, F, T); ``scale`` maps z-scores to model space."""

    profiles: ClassVar[dict[str, dict[str, Any]]] = SERIES_PROFILES

    flip: bool = False  # time reversal is no symmetry of a plant: never flip windows
    lr: float = 1e-3  # measured on the synthetic series, 600 steps: loss 0.048 at 1e-3, 0.094 at 3e-4, 0.21 at 1e-4
    kind: str = "series"
    scale: float = 3.0

    def validate_shape(self) -> None:
        if self.kind != "series":
            raise ConfigError(f"a series diffusion config has kind 'series', got {self.kind!r}")
        if self.flip:
            raise ConfigError("flip must be false for series: a window flipped in time is not a normal window")
        if not 0 < self.scale <= 100:
            raise ConfigError(f"scale must lie in (0, 100], got {self.scale}. Fix: keep the default 3")
        channels, features, steps = self.image_shape
        if channels != 1:
            raise ConfigError(f"windows are (1, features, steps), got image_shape {self.image_shape}")
        halvings = len(self.architecture["block_out_channels"]) - 1
        factor = 2 ** halvings
        if steps % factor:
            raise ConfigError(f"the {self.profile!r} series UNet halves the window {halvings} time(s), so "
                              f"its length must be divisible by {factor}; got {steps}. Fix: use a window of "
                              f"{-(-steps // factor) * factor} steps, or the 'tiny' profile")
        if max(features, steps) > 100_000:
            raise ConfigError(f"windows of {features} features x {steps} steps are too large. Fix: shorten them")


class SeriesUNet(nn.Module):
    """``UNet1DModel`` over (B, F, T) behind the image models' call: (B, 1, F, T), t -> ``.sample``."""

    def __init__(self, config: SeriesDiffusionConfig):
        super().__init__()
        arch = config.architecture
        _, features, steps = config.image_shape
        levels = len(arch["block_out_channels"])
        self.net = UNet1DModel(
            sample_size=steps, in_channels=features, out_channels=features, extra_in_channels=0,
            time_embedding_type="positional", flip_sin_to_cos=True, use_timestep_embedding=True,
            block_out_channels=arch["block_out_channels"], layers_per_block=arch["layers_per_block"],
            down_block_types=("DownResnetBlock1D",) * levels, up_block_types=("UpResnetBlock1D",) * (levels - 1),
            mid_block_type="MidResTemporalBlock1D", out_block_type="OutConv1DBlock", act_fn="mish",
            norm_num_groups=arch["norm_groups"])

    def forward(self, x: Tensor, t: Tensor) -> UNet1DOutput:
        return UNet1DOutput(sample=self.net(x[:, 0], t).sample[:, None])


class SeriesDiffusionModel(DiffusionModel):
    """``SeriesDiffusionModel(SeriesDiffusionConfig(image_shape=(1, F, T)))``; trained with
    ``train_diffusion`` on normal windows, saved and loaded like the image model."""

    config_class: ClassVar[type[DiffusionConfig]] = SeriesDiffusionConfig
    input_range: ClassVar[tuple[float, float] | None] = None  # z-scores: any finite value
    mean_dims: ClassVar[tuple[int, ...]] = (3,)  # a window's "mean colour": each feature's mean over time

    @staticmethod
    def network(config: DiffusionConfig) -> nn.Module:
        return SeriesUNet(config)

    def to_model(self, x: Tensor) -> Tensor:  # type: ignore[override]  # needs the config's scale
        """Normalised windows to model space, where normal values lie well within [-1, 1]."""
        return x / self.config.scale

    def from_model(self, x: Tensor) -> Tensor:  # type: ignore[override]
        """Model space back to normalised windows (not clipped)."""
        return x * self.config.scale

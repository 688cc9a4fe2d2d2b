"""ResNet-18 trunk (stem + first residual stages) with torchvision's parameter names, and the
AE-XAD autoencoder of the paper's section 5.1 built on it.

torchvision cannot be imported here, so the trunk is written out; its state-dict keys match
torchvision's ``resnet18`` (``conv1``, ``bn1``, ``layer1.0.conv1`` ...), so ImageNet weights saved from
torchvision load with ``load_trunk_weights(trunk, path)`` (safetensors, or a ``.pth`` read with
``torch.load(weights_only=True)``: no code is executed). Without such a file the trunk is trained
from scratch, and is then not frozen.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNetTrunk(nn.Module):
    """ResNet-18 up to ``stages`` residual stages: 224 px -> 28 x 28 x 128 with stages=2 (stride 8)."""

    def __init__(self, stages: int = 2):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        widths = [64, 128, 256, 512][:stages]
        c = 64
        for i, width in enumerate(widths, start=1):
            stride = 1 if i == 1 else 2
            setattr(self, f"layer{i}", nn.Sequential(BasicBlock(c, width, stride), BasicBlock(width, width)))
            c = width
        self.stages, self.out_channels = stages, c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        for i in range(1, self.stages + 1):
            x = getattr(self, f"layer{i}")(x)
        return x


def load_trunk_weights(trunk: ResNetTrunk, path: str | Path) -> None:
    """Load torchvision-named ResNet weights (extra keys such as ``fc`` or deeper layers are ignored)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    own = trunk.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise ValueError(f"{path}: not ResNet-18 weights with torchvision names (missing {missing[:3]}). "
                         "Fix: save torchvision.models.resnet18(weights='IMAGENET1K_V1').state_dict()")
    trunk.load_state_dict({k: state[k] for k in own})


class ResNetAutoencoder(nn.Module):
    """AE-XAD's asymmetric autoencoder (sec. 5.1): a ResNet trunk + 1x1 conv to 64 channels; decoder
    branch 1 (fixed) upsamples, applies tanh and sums groups of 8 channels; branch 2 (trained) is three
    conv + transposed-conv blocks with SELU; output = two convs over b1 * b2 + b2."""

    def __init__(self, in_channels: int = 3, weights: str | Path | None = None, latent: int = 64):
        super().__init__()
        self.in_channels = in_channels
        self.trunk = ResNetTrunk(stages=2)
        if weights is not None:
            load_trunk_weights(self.trunk, weights)
            self.trunk.requires_grad_(False)  # frozen ImageNet features, as in the paper
        self.frozen = weights is not None
        self.reduce = nn.Conv2d(self.trunk.out_channels, latent, 1)
        blocks: list[nn.Module] = []
        c = latent
        for width in (64, 32, 8):
            blocks += [nn.Conv2d(c, width, 3, padding=1), nn.SELU(),
                       nn.ConvTranspose2d(width, width, 2, stride=2), nn.SELU()]
            c = width
        self.branch2 = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.SELU(), nn.Conv2d(8, in_channels, 3, padding=1))

    def train(self, mode: bool = True) -> ResNetAutoencoder:
        super().train(mode)
        if self.frozen:
            self.trunk.eval()  # keep ImageNet batch-norm statistics
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rgb = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        z = self.reduce(self.trunk(rgb))
        b1 = torch.tanh(F.interpolate(z, scale_factor=8, mode="nearest"))
        b1 = b1.view(len(z), 8, -1, *b1.shape[-2:]).sum(2)
        b2 = self.branch2(z)
        out = self.head(b1 * b2 + b2)
        if out.shape[-2:] != x.shape[-2:]:
            out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return out

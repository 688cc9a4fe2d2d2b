"""Networks: feature extractors for detectors, and the generator/discriminator building blocks."""

from __future__ import annotations

from typing import Any

from torch import nn


def build_net(config: dict[str, Any]) -> nn.Module:
    """A feature extractor from its ``describe()`` dict (``{"type": "lenet", ...}`` or ``"wrn"``)."""
    config = dict(config)
    kind = config.pop("type", None)
    if kind == "lenet":
        from anomalens.nets.lenet import LeNet, LeNetConfig

        config["conv"], config["fc"] = tuple(config["conv"]), tuple(config["fc"])
        return LeNet(LeNetConfig(**config))
    if kind == "wrn":
        from anomalens.nets.wrn import WideResNet, WRNConfig

        config["widths"] = tuple(config["widths"])
        return WideResNet(WRNConfig(**config))
    if kind == "fcn":
        from anomalens.nets.fcn import FCN, FCNConfig

        config["widths"] = tuple(config["widths"])
        return FCN(FCNConfig(**config))
    raise ValueError(f"unknown network type {kind!r}; known: lenet, wrn, fcn")


def default_net(image_shape: tuple[int, int, int], profile: str | None = None, bias: bool = True) -> dict[str, Any]:
    """The papers' network for an image shape: LeNet profiles up to 32 px, a WideResNet above."""
    from anomalens.nets.lenet import LeNetConfig

    c, h, w = image_shape
    if profile is None:
        if max(h, w) > 32:
            from anomalens.nets.wrn import WRNConfig

            return {"type": "wrn", **WRNConfig(in_channels=c, bias=bias).__dict__}
        profile = "mnist" if c == 1 else ("colored_mnist" if h <= 28 else "cifar")
    if profile == "fcn":
        from anomalens.nets.fcn import FCNConfig

        return {"type": "fcn", **FCNConfig(in_channels=c, bias=bias, pools=2 if max(h, w) <= 32 else 3).__dict__}
    if profile == "wrn":
        from anomalens.nets.wrn import WRNConfig

        return {"type": "wrn", **WRNConfig(in_channels=c, bias=bias).__dict__}
    return {"type": "lenet", **LeNetConfig.profile(profile, c, h, bias).__dict__}

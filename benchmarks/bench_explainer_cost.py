"""What one counterfactual-explainer step costs at a given image size, before committing an hour to it:
the latent autoencoder's training step and one GAN step (G or G' + R update, D update) per profile,
against an untrained BCE detector of the library's default network for that size.

Usage: python benchmarks/bench_explainer_cost.py [--size 128] [--channels 1] [--batch 16]
       [--generator latent] [--concepts 1] [--profiles tiny small cpu] [--threads 2] [--repeats 2]

Multiply by the budget (the `cpu` recipe: 600 steps; the autoencoder: 1,500 steps once per dataset) for
the cost of a scenario. Appendix C of the CE paper (defects, one concept) at 128 px is the default.
"""

from __future__ import annotations

import argparse
import time

import torch
from common import machine

from anomalens.detectors.oe import OEDetector
from anomalens.device import autocast
from anomalens.explain.counterfactual import PROFILES, CEConfig, CounterfactualExplainer
from anomalens.explain.counterfactual_losses import discriminator_loss, generator_losses
from anomalens.nets.latent import AutoencoderConfig, LatentAutoencoder


def seconds(step, repeats: int) -> float:
    step()  # warm-up: oneDNN picks its kernels
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - started) / repeats


def gan_step_seconds(explainer: CounterfactualExplainer, detector: OEDetector, x: torch.Tensor,
                     source: torch.Tensor, repeats: int) -> float:
    """One G (or G') + R update and one D update, as ``CounterfactualExplainer.fit`` does them."""
    noise, cast = torch.Generator().manual_seed(0), autocast("cpu", False)

    def step() -> None:
        total, _, real, fake, level = generator_losses(explainer, detector, x, noise, cast)
        total.backward()
        discriminator_loss(explainer, real, source, fake, level, cast).backward()

    return seconds(step, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--batch", type=int, default=16, help="images per side (normal and anomalous)")
    parser.add_argument("--generator", choices=("pixel", "latent"), default="latent")
    parser.add_argument("--concepts", type=int, default=1)
    parser.add_argument("--profiles", nargs="+", choices=tuple(PROFILES), default=["tiny", "small", "cpu"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if (args.size < 8 or args.size % 4 or args.batch < 2
            or min(args.channels, args.concepts, args.repeats, args.threads) < 1):
        parser.error(f"--size must be a multiple of 4 (>= 8; G and the autoencoder halve it twice), --batch >= 2 "
                     f"and the other counts >= 1; got size {args.size}, batch {args.batch}, channels {args.channels}, "
                     f"concepts {args.concepts}, repeats {args.repeats}, threads {args.threads}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shape = (args.channels, args.size, args.size)
    x = torch.rand(2 * args.batch, *shape)
    source = torch.cat([torch.zeros(args.batch), torch.ones(args.batch)])
    detector = OEDetector("bce", shape).eval()
    detector.requires_grad_(False)
    autoencoder = LatentAutoencoder(AutoencoderConfig(args.channels))
    print(f"| part | {args.size} px, {args.batch} per side | seconds per step |\n|---|---|---|")
    if args.generator == "latent":
        adam = torch.optim.Adam(autoencoder.parameters())

        def autoencoder_step() -> None:
            loss = (autoencoder(x[: args.batch]) - x[: args.batch]).pow(2).mean()
            adam.zero_grad()
            loss.backward()
            adam.step()

        cost = seconds(autoencoder_step, args.repeats)
        print(f"| latent autoencoder | batch {args.batch} | {cost:.2f} |", flush=True)
    for profile in args.profiles:
        config = CEConfig.recipe("cpu" if args.generator == "pixel" else "latent", profile=profile,
                                 concepts=args.concepts, batch_size=args.batch)
        explainer = CounterfactualExplainer(config, shape, autoencoder=autoencoder)
        cost = gan_step_seconds(explainer, detector, x, source, args.repeats)
        print(f"| {args.generator} GAN step, profile `{profile}` | {args.concepts} concept(s) | {cost:.2f} |",
              flush=True)
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()

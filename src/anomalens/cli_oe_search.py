"""``anomalens oe-search``: argparse wiring for ``experiments.oe_search`` (no logic here).

cli.py calls ``add_command(commands)`` while building its parser and ``run_command(args)`` in ``main``
(True when the command was this one).
"""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  anomalens oe-search --dataset mnist --normal 8 --detector bce --oe kmnist --out runs/oe-search/mnist8
  anomalens oe-search --dataset mnist --normal 0 --objective worst --population 64 --generations 50 \\
      --fitness-seeds 2 --fitness-steps-per-epoch 0 --fitness-epochs 30 --elite 0 --out runs/paper0   # appendix H
  anomalens oe-search search.yaml --out runs/s      # the same keys in a YAML file; flags override it
rerun the same command after Ctrl-C to continue from the last generation; the found images are in
OUT/images/oe_search.png and the numbers in OUT/metrics.json."""


def add_command(commands: argparse._SubParsersAction) -> None:
    """Add ``oe-search`` to the ``anomalens`` sub-command parser."""
    from anomalens.device import DEVICES

    search = commands.add_parser("oe-search", help="evolutionary search for the best and worst single OE image "
                                 "(OE paper, appendix H)", formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=EXAMPLES)
    search.add_argument("config", nargs="?", help="YAML file with OESearchJob keys (flags override it)")
    search.add_argument("--out", required=True, help="run folder; rerunning continues the search")
    search.add_argument("--dataset", help="labelled image dataset (default mnist)")
    search.add_argument("--normal", help="normal class(es), e.g. 8 or 1,3")
    search.add_argument("--oe", help="the OE dataset the images are picked from, e.g. kmnist")
    search.add_argument("--pool-size", type=int, help="OE images to pick from (default: all)")
    search.add_argument("--detector", help="an OE detector: bce (default), focal, hsc, deepsad")
    search.add_argument("--net", help="LeNet profile (mnist, fmnist, cifar ...; default: by image size)")
    search.add_argument("--objective", choices=["best", "worst", "both"], help="maximise, minimise or both (default)")
    search.add_argument("--population", type=int, help="individuals per generation (16; paper 64)")
    search.add_argument("--generations", type=int, help="generations after the initial one (10; paper 50)")
    search.add_argument("--tournament", type=int, help="competitors per selection tournament (3)")
    search.add_argument("--mate-chance", type=float, help="mating chance per pair (0.05)")
    search.add_argument("--mutate-chance", type=float, help="mutation chance per individual (0.55)")
    search.add_argument("--candidates", type=int, help="random pool images a new individual is drawn near (10000)")
    search.add_argument("--nearest", type=int, help="... of which the nearest this many are kept (50)")
    search.add_argument("--elite", type=int, help="best individuals kept unchanged per generation (1; paper 0)")
    search.add_argument("--fitness-epochs", type=int, help="training epochs per fitness evaluation (1)")
    search.add_argument("--fitness-steps-per-epoch", type=int,
                        help="cap on the steps of a fitness epoch (20; 0 = whole epochs)")
    search.add_argument("--fitness-seeds", type=int, help="trainings averaged per fitness value (1; paper 2)")
    search.add_argument("--lr", type=float)
    search.add_argument("--batch-size", type=int, help="per side: normal images and OE copies each (128)")
    search.add_argument("--augment", choices=["none", "gray", "natural"], help="augmentation preset (none: MNIST)")
    search.add_argument("--val-normal", type=int, help="normal training images held out for validation (500)")
    search.add_argument("--val-anomalies", type=int, help="training images of other classes for validation (1000)")
    search.add_argument("--report-top", type=int, help="found images per objective scored on test (3)")
    search.add_argument("--baseline-draws", type=int, help="random single images for the baseline (16)")
    search.add_argument("--seed", type=int)
    search.add_argument("--data-root", help="folder searched first (before $ANOMALENS_DATA and ~/.cache/anomalens)")
    search.add_argument("--device", choices=DEVICES, help="auto (default): CUDA, then MPS, then CPU")


def run_command(args: argparse.Namespace) -> bool:
    """Run ``anomalens oe-search`` if that is the command; False otherwise."""
    if args.command != "oe-search":
        return False
    from anomalens.config import from_dict, load_config
    from anomalens.experiments.oe_search import OESearchJob, run_search

    job = load_config(OESearchJob, args.config) if args.config else OESearchJob()
    overrides = {k: v for k, v in vars(args).items() if k not in {"config", "out", "command"} and v is not None}
    if overrides.get("fitness_steps_per_epoch") == 0:
        overrides["fitness_steps_per_epoch"] = None
    job = from_dict(OESearchJob, {**vars(job), **overrides}, args.config or "command line")
    run_search(job, args.out)
    return True

"""The ``anomalens`` command: a thin layer over the API; it parses flags and prints, nothing more."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from anomalens.cli_grid import add_grid_commands, run_grid_command
from anomalens.cli_oe_search import add_command as add_oe_search_command
from anomalens.cli_oe_search import run_command as run_oe_search_command
from anomalens.cli_serve import add_commands as add_serve_commands
from anomalens.cli_serve import run_command as run_serve_command
from anomalens.device import DEVICES
from anomalens.errors import AnomalensError
from anomalens.logs import setup_logging

EXAMPLES = {
    "data list": "examples:\n  anomalens data list\n  ANOMALENS_DATA=../shared/data anomalens data list\n"
                 "  anomalens data list --data-root /data --json",
    "data info": "examples:\n  anomalens data info mnist\n  anomalens data info cifar10 --data-root ../shared/data",
    "data download": "examples:\n  anomalens data download mnist\n"
                     "  anomalens data download fashion_mnist --data-root /data   # -> /data/fashion_mnist/",
    "train": "examples:\n  anomalens train --dataset mnist --normal 7 --detector hsc --oe kmnist --oe-size 1024 "
             "--epochs 20 --out runs/x\n  anomalens train config.yaml --out runs/y\n"
             "  anomalens train --dataset mnist --colored --normal 'red or one' --detector supervised "
             "--known-anomalies blue --out runs/bias\n"
             "  anomalens train --dataset synthetic_defects/stripes --detector aexad --epochs 30 --batch-size 32 "
             "--out runs/aexad",
    "explain": "examples:\n  anomalens explain runs/aexad\n  anomalens explain runs/x --method gradient_x_input\n"
               "  anomalens explain runs/x --method counterfactual --minutes 15\n"
               "  anomalens explain runs/x --method counterfactual --images my_photos/\n"
               "  anomalens explain runs/flow --method repair --minutes 20\n"
               "  anomalens explain --detector det.safetensors --dataset mnist --normal 7 --oe kmnist "
               "--method counterfactual --out runs/ce",
    "list": "examples:\n  anomalens list\n  anomalens list --json",
    "demo": "examples:\n  anomalens demo\n  anomalens demo --out runs/my-demo --seed 3\n"
            "  anomalens demo --steps 300   # a quicker, less valid look on a CPU without native bfloat16",
}


def _step_count(text: str) -> int:
    """argparse type for a step budget: a bad value fails before minutes of training, not after."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a step count. Fix: a whole number >= 1, e.g. 300")
    return value


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="anomalens", formatter_class=fmt,
        description="Detect anomalies in images and explain them.",
        epilog="examples:\n  anomalens demo\n  anomalens data list\n  anomalens data info mnist")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = commands.add_parser("data", help="list, inspect and download datasets", formatter_class=fmt,
                               epilog=EXAMPLES["data list"])
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    root_help = "folder searched first (before $ANOMALENS_DATA and ~/.cache/anomalens)"

    listing = data_commands.add_parser("list", help="every dataset, where it is looked for, whether present",
                                       formatter_class=fmt, epilog=EXAMPLES["data list"])
    listing.add_argument("--data-root", help=root_help)
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")

    info = data_commands.add_parser("info", help="counts per class, image size and file locations",
                                    formatter_class=fmt, epilog=EXAMPLES["data info"])
    info.add_argument("name")
    info.add_argument("--data-root", help=root_help)
    info.add_argument("--json", action="store_true", help="print JSON instead of text")

    download = data_commands.add_parser("download", help="fetch a dataset from its official source",
                                        formatter_class=fmt, epilog=EXAMPLES["data download"])
    download.add_argument("name")
    download.add_argument("--data-root", help="where to put it (default ~/.cache/anomalens)")

    train = commands.add_parser("train", help="train and evaluate a detector into a run folder",
                                formatter_class=fmt, epilog=EXAMPLES["train"])
    train.add_argument("config", nargs="?", help="YAML file with TrainJob keys (flags override it)")
    train.add_argument("--out", required=True, help="run folder; rerunning resumes from its last checkpoint")
    train.add_argument("--dataset")
    train.add_argument("--normal", help="normal class(es) '7' or '1,3', or a rule 'red or one'")
    train.add_argument("--detector", choices=detector_names(),
                       help="ae and flow are the reconstruction and normalising-flow detectors AR-Pro repairs")
    train.add_argument("--oe", help="Outlier-Exposure dataset, e.g. kmnist, kmnist+glyph_letters, confetti; "
                       "name@split picks a split (tinyimagenet@train+tinyimagenet@test)")
    train.add_argument("--oe-size", type=int, help="number of OE images (default: all)")
    train.add_argument("--known-anomalies", help="rule selecting labelled training anomalies, e.g. blue")
    train.add_argument("--known-size", type=int)
    train.add_argument("--labelled-per-type", type=int, help="defect datasets: annotated anomalies per type")
    train.add_argument("--anomalies-only", action="store_const", const=True, help="defect datasets: D* scenario")
    train.add_argument("--image-size", type=int, help="defect datasets: resize images and masks")
    train.add_argument("--architecture", choices=["small", "resnet"],
                       help="aexad: autoencoder architecture; flow: pixel or frozen ResNet-18 features")
    train.add_argument("--trunk-weights", help="aexad/flow resnet: local ResNet-18 ImageNet weights "
                                               "(.pth/.safetensors); clip/bce_cl: a CLIP folder or hub id "
                                               "(default openai/clip-vit-base-patch32, docs/clip.md)")
    train.add_argument("--colored", action="store_const", const=True, help="use the 7-colour variant")
    train.add_argument("--net", help="mnist, colored_mnist, fmnist, cifar or wrn (default: by image size)")
    train.add_argument("--focal-gamma", type=float)
    train.add_argument("--epochs", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--milestones", type=lambda s: [int(v) for v in s.split(",") if v], help="e.g. 15,18")
    train.add_argument("--batch-size", type=int, help="per side: normal and anomalies each")
    train.add_argument("--augment", choices=["none", "gray", "natural"])
    train.add_argument("--pretrain-epochs", type=int, help="autoencoder pretraining epochs (Deep SVDD)")
    train.add_argument("--bf16", action="store_const", const=True,
                       help="bfloat16 autocast (GPUs, CPUs with AVX512-BF16 or AMX; float32 elsewhere)")
    train.add_argument("--seed", type=int)
    train.add_argument("--data-root", help=root_help)
    train.add_argument("--device", choices=DEVICES, help="auto (default): CUDA, then MPS, then CPU")
    series = train.add_argument_group("time series (skab, synthetic_series, or a CSV/Parquet file or folder)")
    series.add_argument("--window", type=int, help="steps per window (100)")
    series.add_argument("--stride", type=int, help="steps between window starts (10)")
    series.add_argument("--time-column", help="CSV/Parquet: the time column (default: rows in file order)")
    series.add_argument("--feature-columns", type=lambda s: tuple(v.strip() for v in s.split(",") if v.strip()),
                        help="CSV/Parquet: the sensor columns, comma-separated (default: every other column)")
    series.add_argument("--label-column", help="CSV/Parquet: 1 = anomalous step")
    series.add_argument("--train-fraction", type=float, help="share of each labelled file's normal prefix used for "
                                                             "training (0.5)")
    series.add_argument("--normalise", choices=["recording", "global"], help="z-scores per recording (default) or "
                                                                            "over all recordings")

    explain = commands.add_parser("explain", help="explain the test anomalies of a training run",
                                  formatter_class=fmt, epilog=EXAMPLES["explain"])
    explain.add_argument("run_dir", nargs="?", help="folder of a finished `anomalens train` run")
    explain.add_argument("--method", default="heatmap", choices=[*explainer_names(), "all"],
                         help="heatmap: the detector's own map (FCDD, AE-XAD) or its input gradient; "
                              "counterfactual: train the concept-disentangled GAN explainer; "
                              "repair: AR-Pro property-guided diffusion repair (decomposable detectors); "
                              "all: one page with every explanation the run holds (= anomalens report)")
    explain.add_argument("--images", help="counterfactual: explain the images of this folder with the trained "
                                          "explainer (one sub-folder per class, or images directly)")
    explain.add_argument("--detector", help="a detector file, instead of RUN_DIR (with --dataset, --normal, --out)")
    explain.add_argument("--dataset")
    explain.add_argument("--normal", help="normal class(es) or rule, as for `anomalens train`")
    explain.add_argument("--oe", help="Outlier-Exposure set the explainer trains on, e.g. kmnist")
    explain.add_argument("--colored", action="store_true", help="the 7-colour variant of --dataset")
    explain.add_argument("--out", help="run folder to create for --detector")
    explain.add_argument("--device", choices=DEVICES, help="auto (default): CUDA, then MPS, then CPU")
    ce = explain.add_argument_group("counterfactual explainer (defaults: the CPU recipe, see README)")
    ce.add_argument("--recipe", default="cpu", help="cpu (pixel G measured on 2 CPU cores), latent (G' edits an "
                                                    "autoencoder's latent) or paper (appendix E.1)")
    ce.add_argument("--generator", choices=["pixel", "latent"], help="override the recipe's generator")
    ce.add_argument("--autoencoder", help="latent: an autoencoder file or kl:<folder|hub id> (a diffusers "
                                          "AutoencoderKL); default: trained once per dataset and cached")
    ce.add_argument("--profile", help="network widths: tiny, small, cpu or paper")
    ce.add_argument("--steps", type=int, help="training budget in steps (the same result on any machine); a rerun "
                                              "with more steps continues from the last checkpoint")
    ce.add_argument("--minutes", type=float, help="optional cap: stop after this long (checkpointed; rerun resumes)")
    ce.add_argument("--concepts", type=int)
    for name in ("lambda_gan", "lambda_phi", "lambda_rec", "lambda_r", "lr", "phi_noise"):
        ce.add_argument("--" + name.replace("_", "-"), type=float)
    ce.add_argument("--level-weights", type=float, nargs=3, metavar=("W0", "W05", "W1"),
                    help="how often G trains towards target score 0 / 0.5 / 1 (default 1 1 1, the paper's)")
    ce.add_argument("--d-every", type=int, help="update the discriminator every n-th step")
    ce.add_argument("--conditional-d", action=argparse.BooleanOptionalAction, default=None)
    ce.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None)
    ce.add_argument("--seed", type=int)
    ce.add_argument("--fid-features", help="Inception-v3 weights file for FID (default: $ANOMALENS_INCEPTION_WEIGHTS, "
                                           "else the oracle's features)")
    ce.add_argument("--no-sub-auroc", action="store_true", help="skip retraining the detector on counterfactuals")
    ce.add_argument("--oracle-epochs", type=int, default=3, help="epochs of the oracle's training (3)")
    ce.add_argument("--oracle-images", type=int, help="train the oracle on at most this many labelled images")

    repair = explain.add_argument_group("repair (AR-Pro; --profile, --steps, --minutes, --bf16 and --seed set the "
                                        "diffusion model's training)")
    repair.add_argument("--strength", type=float, help="start noise level as a fraction of the timesteps (0.5)")
    repair.add_argument("--sampler", choices=["ddpm", "ddim"],
                        help="ddim: 50 steps (default, fast); ddpm: every step (paper)")
    repair.add_argument("--sample-steps", type=int, help="reverse steps (default: all for ddpm, 50 for ddim)")
    repair.add_argument("--guidance", type=float, help="property-guidance scale (3.0; 0 = unguided)")
    repair.add_argument("--lambdas", type=lambda s: tuple(float(v) for v in s.split(",")),
                        help="weights of the four property losses, e.g. 1,1,1,1 (paper)")
    repair.add_argument("--delta4", type=float, help="P4 tolerance relative to the clean region's score (0.05)")
    repair.add_argument("--max-anomalies", type=int, help="test anomalies to repair (64) or to evaluate the "
                                                          "counterfactuals on (2000)")
    repair.add_argument("--no-baseline", action="store_true", help="skip the unguided baseline repairs")

    demo = commands.add_parser("demo", help="run the offline pipeline on the built-in glyphs",
                               formatter_class=fmt, epilog=EXAMPLES["demo"])
    demo.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quick", action="store_true", help="a smoke run in under a minute; its numbers mean nothing")
    demo.add_argument("--steps", type=_step_count,
                      help="explainer steps (default: the demo's measured budget, 1,200; 300 for a quick look)")
    demo.add_argument("--device", choices=DEVICES, default="auto", help="auto (default): CUDA, then MPS, then CPU")

    listing = commands.add_parser("list", help="the registered detectors and explanation methods")
    listing.add_argument("--json", action="store_true", help="print JSON instead of text")
    add_grid_commands(commands)
    add_serve_commands(commands)
    add_oe_search_command(commands)
    return parser


def _print_table(rows: list[dict[str, object]]) -> None:
    width = max(len(str(r["name"])) for r in rows)
    for r in rows:
        present = ", ".join(r["present"]) if r["present"] else "missing"  # type: ignore[arg-type]
        print(f"{r['name']:<{width}}  {present:<12}  {r['description']}")
        if r["location"]:
            where = r["location"] if str(r["location"]).startswith("built-in") else f"found in {r['location']}"
            print(f"{'':<{width}}  {'':<12}  {where}")
        elif not r["present"]:
            print(f"{'':<{width}}  {'':<12}  looked in {', '.join(r['searched'])}")  # type: ignore[arg-type]
            if r.get("notes"):
                print(f"{'':<{width}}  {'':<12}  {r['notes']}")


def _print_info(info: dict) -> None:
    print(f"{info['name']}: {info['description']}")
    for split, s in info["splits"].items():
        print(f"\n{split}: {s['count']} images of shape {tuple(s['image_shape'])}")
        files = s["files"] if isinstance(s["files"], str) else "\n    ".join(s["files"])
        print(f"  files: {files}")
        counts = s.get("class_counts") or s.get("defect_counts")
        for name, count in counts.items():
            print(f"  {count:>7}  {name}")


def _download(name: str, data_root: str | None) -> None:
    from anomalens.data import catalog, download

    spec = catalog.get_spec(name)
    if spec.name not in download.OFFICIAL_FILES:
        raise AnomalensError(f"{spec.name} has no official download ({spec.notes or 'built-in or manual'})")
    folder = Path(data_root or catalog.CACHE_DIR).expanduser() / (spec.folders or (spec.name,))[0].split("/")[0]
    for path in download.download_all(download.OFFICIAL_FILES[spec.name], folder):
        if path.name.endswith(download.ARCHIVE_SUFFIXES):
            print(f"extracting {path.name}")
            download.extract(path, folder)
    print(f"{spec.name} is in {folder}; splits present: {catalog.available_splits(spec.name, data_root)}")


def _train(args: argparse.Namespace) -> None:
    from anomalens.config import from_dict, load_config
    from anomalens.experiments.training_run import TrainJob, run_training

    job = load_config(TrainJob, args.config) if args.config else TrainJob()
    skip = {"config", "out", "command", "data_command"}
    overrides = {k: v for k, v in vars(args).items() if k not in skip and v is not None}
    job = from_dict(TrainJob, {**vars(job), **overrides}, args.config or "command line")
    run_training(job, args.out)


def _explain(args: argparse.Namespace) -> None:
    run_dir = args.run_dir
    if args.detector:
        from anomalens.experiments.counterfactual_run import run_from_detector

        if not (args.dataset and args.normal and args.out):
            raise AnomalensError("--detector needs --dataset, --normal and --out (the run folder to create)")
        run_dir = run_from_detector(args.detector, args.out, args.dataset, args.normal, args.oe, args.colored)
    if run_dir is None:
        raise AnomalensError("pass RUN_DIR (a finished `anomalens train` run) or --detector FILE")
    if args.method == "repair":
        _repair(args, run_dir)
        return
    if args.method == "all":  # every explanation the run holds, side by side (= anomalens report)
        from anomalens.experiments.compare_run import compare_run

        print(compare_run(run_dir))
        return
    if args.method != "counterfactual":
        from anomalens.experiments.explain_run import explain_run

        explain_run(run_dir, args.method)  # heatmaps need no device: they are cheap
        return
    from anomalens.experiments.counterfactual_run import explain_counterfactuals, explain_images
    from anomalens.explain.counterfactual import CEConfig

    if args.images:
        explain_images(run_dir, args.images)
        return
    keys = ("profile", "steps", "minutes", "concepts", "lambda_gan", "lambda_phi", "lambda_rec", "lambda_r", "lr",
            "phi_noise", "level_weights", "d_every", "conditional_d", "bf16", "seed", "generator", "autoencoder")
    options = {k: getattr(args, k) for k in (*keys, "device") if getattr(args, k) is not None}
    cfg = CEConfig.recipe(args.recipe, **options)
    explain_counterfactuals(run_dir, cfg, fid_features=args.fid_features, with_sub_auroc=not args.no_sub_auroc,
                            oracle_epochs=args.oracle_epochs, oracle_limit=args.oracle_images,
                            max_anomalies=args.max_anomalies or 2000)


def _repair(args: argparse.Namespace, run_dir: str) -> None:
    from anomalens.config import from_dict
    from anomalens.experiments.repair_run import explain_repairs
    from anomalens.explain.repair import RepairConfig

    names = {"strength": "strength", "sampler": "sampler", "sample_steps": "steps", "guidance": "guidance",
             "lambdas": "weights", "delta4": "delta4", "seed": "seed"}
    options = {field: getattr(args, arg) for arg, field in names.items() if getattr(args, arg) is not None}
    options["diffusion"] = {k: getattr(args, k) for k in ("profile", "steps", "minutes", "bf16", "seed", "device")
                            if getattr(args, k) is not None}
    cfg = from_dict(RepairConfig, options, "command line")
    explain_repairs(run_dir, cfg, max_anomalies=args.max_anomalies or 64, baseline=not args.no_baseline)


def _list(as_json: bool) -> None:
    from anomalens.detectors import registry as detectors
    from anomalens.explain import registry as explainers

    found = {"detectors": detectors.names(), "explainers": explainers.names()}
    if as_json:
        print(json.dumps(found, indent=2))
        return
    for kind, names in found.items():
        print(f"{kind}: {', '.join(names)}")


def detector_names() -> list[str]:
    from anomalens.detectors.registry import names

    return names()


def explainer_names() -> list[str]:
    from anomalens.explain.registry import names

    return names()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging()
    try:
        if run_serve_command(args) or run_oe_search_command(args):  # predict, report, serve, oe-search
            pass
        elif args.command == "list":
            _list(args.json)
        elif args.command == "grid":
            run_grid_command(args)
        elif args.command == "train":
            _train(args)
        elif args.command == "explain":
            _explain(args)
        elif args.command == "demo":
            from anomalens.demo import DemoConfig, run_demo

            budget = {} if args.steps is None else {"explainer_steps": args.steps}  # DemoConfig owns the default
            run_demo(args.out, DemoConfig(seed=args.seed, quick=args.quick, device=args.device, **budget))
        elif args.data_command == "list":
            from anomalens.data.catalog import catalog_rows

            rows = catalog_rows(args.data_root)
            print(json.dumps(rows, indent=2)) if args.json else _print_table(rows)
        elif args.data_command == "info":
            from anomalens.data.catalog import dataset_info

            info = dataset_info(args.name, args.data_root)
            print(json.dumps(info, indent=2)) if args.json else _print_info(info)
        elif args.data_command == "download":
            _download(args.name, args.data_root)
    except (AnomalensError, ValueError) as e:
        print(f"anomalens: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `anomalens ... | head` closed the pipe: the reader has all it wants
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except OSError as e:  # disk full, read-only folder, --out is a file ...: the OS's words and the path
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"anomalens: error: {e.strerror or e}{where}. Fix: check the path, its permissions and the free "
              "disk space", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("anomalens: interrupted", file=sys.stderr)
        return 130
    return 0


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


if __name__ == "__main__":
    sys.exit(main())

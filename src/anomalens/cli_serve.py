"""The ``predict``, ``report`` and ``serve`` commands: argparse wiring only, the work is in
``experiments.predict``, ``experiments.compare_run`` and ``serve.app``.

cli.py calls ``add_commands(commands)`` while building its parser and ``run_command(args)`` first
in ``main`` (True when the command was one of these three).
"""

from __future__ import annotations

import argparse

EXAMPLES = {
    "predict": "examples:\n  anomalens predict runs/x --images my_images/\n"
               "  anomalens predict runs/x --images parts/ --out results/parts --threshold 0.8\n"
               "  anomalens predict runs/x --images parts/ --fpr 0.01     # stricter automatic threshold\n"
               "folders: images directly inside, or one sub-folder per class; with sub-folders named good or\n"
               "normal beside others, the AuROC of good/normal vs the rest is reported too.",
    "report": "examples:\n  anomalens report runs/x                 # -> runs/x/explain/compare/report.html\n"
              "  anomalens report runs/x --shown 12",
    "serve": "examples:\n  anomalens serve runs/x                  # then open http://127.0.0.1:8000/\n"
             "  anomalens serve runs/bce runs/hsc --port 8080   # switch between detectors on the page\n"
             "needs the optional extra: pip install 'anomalens[serve]'",
}


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``predict``, ``report`` and ``serve`` to the ``anomalens`` sub-command parser."""
    fmt = argparse.RawDescriptionHelpFormatter
    predict = commands.add_parser("predict", help="score your own images with a trained run: CSV, maps, overlays",
                                  formatter_class=fmt, epilog=EXAMPLES["predict"])
    predict.add_argument("run_dir", help="folder of a finished `anomalens train` run")
    predict.add_argument("--images", required=True, help="folder of images (flat, or one sub-folder per class)")
    predict.add_argument("--out", help="where to write predictions.csv, maps/ and overlays/ "
                                       "(default RUN_DIR/predict/<folder name>)")
    predict.add_argument("--threshold", default="auto",
                         help="auto (default): split-conformal threshold on the run's held-out normal scores; "
                              "or a raw-score value (an image above it is anomalous)")
    predict.add_argument("--fpr", type=float, default=0.05,
                         help="false-positive rate the automatic threshold allows (default 0.05)")
    predict.add_argument("--heatmap", default="heatmap", choices=["heatmap", "gradient", "gradient_x_input"],
                         help="heatmap: the detector's own map where it has one, else the input gradient")

    report = commands.add_parser("report", help="one HTML page comparing every explanation a run holds",
                                 formatter_class=fmt, epilog=EXAMPLES["report"])
    report.add_argument("run_dir", help="folder of a finished `anomalens train` run (with `anomalens explain` results)")
    report.add_argument("--shown", type=int, default=6, help="test anomalies shown (default 6)")

    serve = commands.add_parser("serve", help="the what-if explorer: a local web app for one or more runs",
                                formatter_class=fmt, epilog=EXAMPLES["serve"])
    serve.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders (several: switch on the page)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")


def run_command(args: argparse.Namespace) -> bool:
    """Run ``args.command`` if it is one of this module's; False otherwise."""
    if args.command == "predict":
        from anomalens.experiments.predict import predict

        summary = predict(args.run_dir, args.images, args.out, args.threshold, args.fpr, args.heatmap)
        print(summary["csv"])
    elif args.command == "report":
        from anomalens.experiments.compare_run import compare_run

        if args.shown < 1:
            from anomalens.errors import ConfigError

            raise ConfigError(f"--shown {args.shown} must be >= 1. Fix: e.g. --shown 6")
        print(compare_run(args.run_dir, args.shown))
    elif args.command == "serve":
        from anomalens.serve.app import serve

        serve(args.run_dirs, args.host, args.port)
    else:
        return False
    return True

"""``anomalens grid run|status|table``: the command-line face of ``experiments.grid`` (thin, no logic).

``cli.py`` wires it with ``add_grid_commands(commands)`` in its parser and
``run_grid_command(args)`` when ``args.command == "grid"``; ``python -m anomalens.cli_grid`` runs
the same commands on their own.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from anomalens.errors import AnomalensError

EXAMPLES = """examples:
  anomalens grid run grids/oe_table1.yaml --out runs/oe_table1 --workers 2
  anomalens grid run grids/oe_table1.yaml --out runs/oe_table1 --set seeds=1 --set epochs=2 --dry-run
  anomalens grid run grids/ce_mnist.yaml --out /shared/ce_mnist --scale paper --launcher ray --address auto
  anomalens grid status runs/oe_table1
  anomalens grid table runs/oe_table1 --layout oe --format latex"""


def add_grid_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``grid`` with its actions ``run``, ``status`` and ``table`` to the main parser's subcommands."""
    from anomalens.experiments.launchers import LAUNCHERS

    fmt = argparse.RawDescriptionHelpFormatter
    grid = subparsers.add_parser("grid", help="run a grid of runs (the papers' protocols), show its status, "
                                 "print its tables", formatter_class=fmt, epilog=EXAMPLES)
    grid.set_defaults(data_command=None)
    actions = grid.add_subparsers(dest="grid_command", required=True, metavar="ACTION")

    run = actions.add_parser("run", help="run every unfinished run of a grid file (rerun to resume)",
                             formatter_class=fmt, epilog=EXAMPLES)
    run.add_argument("grid_file", metavar="GRID.yaml", help="a grid file, e.g. grids/oe_table1.yaml")
    run.add_argument("--out", required=True, help="grid folder: plan.json and runs/<name>/ per run")
    run.add_argument("--launcher", default="local", choices=sorted(LAUNCHERS),
                     help="local: worker processes on this machine; ray: Ray tasks (pip install 'anomalens[ray]')")
    run.add_argument("--workers", type=int, help="runs at a time (local default: cores / threads; "
                                                 "ray default: as many as the cluster's CPUs hold)")
    run.add_argument("--threads-per-worker", type=int, help="torch threads per run (default: cores / --workers, "
                                                            "or 1); the same value gives the same numbers")
    run.add_argument("--address", help="ray: cluster address (host:6379, ray://host:10001, auto); default: "
                                       "$RAY_ADDRESS, a running local instance, or a new local one")
    run.add_argument("--retries", type=int, default=2, help="retries of a run whose process died (default 2); "
                                                            "a run that raises is never retried")
    run.add_argument("--scale", default="cpu", choices=["cpu", "paper"],
                     help="cpu: the file's values; paper: with its paper: block (GPU scale)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override: a base key (epochs=2), seeds=2, explain.steps=100, grid.normal=[3,5]")
    run.add_argument("--dry-run", action="store_true", help="list the runs and exit")

    status = actions.add_parser("status", help="done / running / failed / pending counts and an ETA")
    status.add_argument("out", metavar="DIR", help="the --out folder of `grid run`")
    status.add_argument("--list", action="store_true", help="one line per run")

    table = actions.add_parser("table", help="the finished runs as the papers' tables (mean ± std over seeds)")
    table.add_argument("out", metavar="DIR", help="the --out folder of `grid run`")
    table.add_argument("--format", default="md", choices=["md", "csv", "latex"])
    table.add_argument("--layout", choices=["ce", "oe", "curve"],
                       help="ce: per-scenario rows (CE paper Tables 5-24); oe: datasets x detectors (OE paper "
                            "Table 1); curve: AuROC vs oe_size (Figures 2-3, plus a PNG). Default: the grid's")
    table.add_argument("--x", metavar="KEY", help="curve layout: the key on the x axis (oe_size, oe_classes, "
                                                  "filter_cutoff, focal_gamma, hsc_radial); default: curve_x")


def _run(args: argparse.Namespace) -> None:
    from anomalens.experiments.grid import expand, load_grid, run_grid

    spec = load_grid(args.grid_file, args.scale, tuple(args.set))
    if args.dry_run:
        runs = expand(spec, args.grid_file)
        for planned in runs:
            print(f"{planned.name}  {' '.join(f'{k}={v}' for k, v in planned.point.items())}")
        print(f"{len(runs)} runs ({args.scale} scale)")
        return
    summary = run_grid(spec, args.out, args.launcher, args.workers, args.threads_per_worker, args.address,
                       args.retries, source=args.grid_file, log=lambda line: print(line, flush=True))
    if summary.failures:
        name, message = next(iter(summary.failures.items()))
        raise AnomalensError(f"{len(summary.failures)} of {summary.total} runs failed (first: {name}: {message}). "
                             f"Fix: see `anomalens grid status {args.out} --list` and runs/<name>/failed, then "
                             "rerun the same command: finished runs are kept, failed ones retried")


def _status(args: argparse.Namespace) -> None:
    from anomalens.experiments import grid_state
    from anomalens.experiments.grid import read_plan, run_folders
    from anomalens.progress import format_seconds

    plan, folders = read_plan(args.out), run_folders(args.out)
    summary = grid_state.summarize(folders)
    counts = ", ".join(f"{summary.counts[s]} {s}" for s in grid_state.STATES)
    print(f"grid {plan.get('name')} ({args.out}): {summary.total} runs: {counts}")
    if summary.mean_seconds is not None:
        at_once = max(1, summary.counts[grid_state.RUNNING])
        eta = summary.eta_seconds()
        print(f"ETA {format_seconds(eta)} at {at_once} run(s) at a time "
              f"(mean {summary.mean_seconds:.1f} s per finished run)" if eta else
              "nothing left to run" + (": fix the failed runs and rerun `grid run`" if summary.failures else ""))
    if args.list:
        for name, folder in folders.items():
            print(f"{grid_state.status(folder):<8} {name}")
    for name, message in summary.failures.items():
        print(f"failed: {name}: {message}")


def _table(args: argparse.Namespace) -> None:
    from anomalens.atomic import atomic_write_text
    from anomalens.experiments.collect import collect, render
    from anomalens.experiments.grid import read_plan

    layout = args.layout or read_plan(args.out).get("table", "ce")
    text = render(collect(args.out, layout, args.x), args.format)
    path = Path(args.out) / "tables" / (layout + {"md": ".md", "csv": ".csv", "latex": ".tex"}[args.format])
    atomic_write_text(path, text)
    print(text)
    print(f"written: {path}", file=sys.stderr)


def run_grid_command(args: argparse.Namespace) -> None:
    """Execute a parsed ``anomalens grid ...`` command; every failure is an ``AnomalensError``."""
    try:
        {"run": _run, "status": _status, "table": _table}[args.grid_command](args)
    except (AnomalensError, BrokenPipeError):  # a closed pipe (`| head`) is the CLI's to end quietly
        raise
    except OSError as e:
        raise AnomalensError(f"{e.filename or ''}: {e.strerror or e}. Fix: check the path and its permissions") from e


def main(argv: list[str] | None = None) -> int:
    """``python -m anomalens.cli_grid run|status|table ...`` (the same as ``anomalens grid ...``)."""
    parser = argparse.ArgumentParser(prog="anomalens")
    add_grid_commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(["grid", *(sys.argv[1:] if argv is None else argv)])
    try:
        run_grid_command(args)
    except (AnomalensError, ValueError) as e:
        print(f"anomalens: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("anomalens: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

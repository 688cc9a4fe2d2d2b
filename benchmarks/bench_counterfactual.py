"""Counterfactual-explanation benchmarks (CE paper, section 4 and appendix G), on this machine's CPU.

Usage (each writes benchmarks/results/counterfactual_<suite>.json and .md; finished runs are skipped,
interrupted ones resume):
  python benchmarks/bench_counterfactual.py cmnist     # Colored-MNIST, normal = red or one, BCE, coloured KMNIST OE
  python benchmarks/bench_counterfactual.py mnist      # MNIST one-vs-rest, BCE and HSC, KMNIST OE
  python benchmarks/bench_counterfactual.py bias       # section 4.4: supervised on blue anomalies vs BCE with OE
  python benchmarks/bench_counterfactual.py recipes    # Colored-MNIST, BCE: what moves oracle validity
  python benchmarks/bench_counterfactual.py cost       # seconds per training step of each width profile
Options: --classes 7,0 --detectors bce --minutes 12 --steps 1800 --root runs/bench_ce

Each scenario: train the detector (the detection benchmark's CPU recipe), train the explainer with the
``cpu`` recipe for at most --minutes, evaluate every metric of appendix D plus oracle validity (an
independent label classifier, shared per dataset). Needs ANOMALENS_DATA pointing at shared/data.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from datetime import date
from pathlib import Path

import torch
from common import machine

from anomalens.data.scenarios import COLOUR_NAMES
from anomalens.experiments.counterfactual_run import explain_counterfactuals
from anomalens.experiments.explain_run import load_run
from anomalens.experiments.paper_figures import paper_figures
from anomalens.experiments.training_run import TrainJob, run_training
from anomalens.explain.counterfactual import CEConfig, CounterfactualExplainer
from anomalens.metrics import counterfactual as cfm
from anomalens.metrics.oracle import LabelClassifier

RESULTS = Path(__file__).parent / "results"
MNIST = TrainJob(dataset="mnist", oe="kmnist", epochs=20, lr=1e-3, milestones=(15,))
# the classifier-bias benchmark's recipe (bench_bias.py: BCE 0.996, supervised 0.851)
CMNIST = TrainJob(dataset="mnist", colored=True, normal="red or one", oe="kmnist", net="colored_mnist", epochs=10,
                  lr=5e-4, milestones=(8,), bf16=True)
# explainer variants on one detector (Colored-MNIST, BCE); each overrides the cpu recipe
RECIPE_VARIANTS = {
    "paper_weights": {"lambda_rec": 100.0, "lambda_gan": 1.0, "d_every": 5, "conditional_d": False, "phi_noise": 0.0,
                      "warmup_steps": 0},
    "rec20_gan1": {"lambda_rec": 20.0, "lambda_gan": 1.0, "warmup_steps": 0},
    "rec20_gan5": {"warmup_steps": 0},
    "rec5_gan5": {"lambda_rec": 5.0, "warmup_steps": 0},
    "rec20_gan5_unconditional_warmup": {"conditional_d": False},
    "rec20_gan5_warmup": {},  # = the cpu recipe
}
SUITES = {
    "cmnist": [("cmnist_bce", {**vars(CMNIST), "detector": "bce"})],
    "mnist": [(f"mnist_{c}_{d}", {**vars(MNIST), "normal": str(c), "detector": d})
              for c in (7, 0, 3, 9) for d in ("bce", "hsc")],
    "recipes": [(f"cmnist_bce/{v}", {**vars(CMNIST), "detector": "bce"}) for v in RECIPE_VARIANTS],
    "bias": [("cmnist_bce", {**vars(CMNIST), "detector": "bce"}),
             ("cmnist_supervised_blue", {**vars(CMNIST), "detector": "supervised", "oe": None,
                                         "known_anomalies": "blue"})],
}
KEYS = ("ad_auroc", "score_distance", "cf_auroc", "sub_auroc", "fid_n", "concept_acc", "oracle_validity",
        "oracle_validity_all", "train_seconds", "seconds_per_step", "steps")


def non_blue_validity(run_dir: Path, oracle_path: Path) -> float:
    """Oracle validity on the detected anomalies that are *not* blue (section 4.4's question: do the
    counterfactuals still look normal where the supervised classifier saw no training anomalies?)."""
    job, detector, data = load_run(run_dir)
    explainer = CounterfactualExplainer.load(run_dir / "explain" / "counterfactual" / "explainer.safetensors")
    blue = COLOUR_NAMES.index("blue")
    keep = (data.test_y == 1) & (data.test_attrs["colour"] != blue)
    anomalies = data.test_x[keep][:2000]
    result = explainer.explain(anomalies, detector)
    detected = result.input_scores >= 0.5
    is_normal = cfm.normal_predicate(job.normal, [str(i) for i in range(10)])
    oracle = LabelClassifier.load(oracle_path)
    return cfm.oracle_validity(oracle, anomalies[detected], result.images[detected], is_normal)["oracle_validity"]


def step_cost(root: Path, profiles: list[str] | None = None) -> None:
    """Seconds per explainer training step (64 normal + 64 OE, MNIST, BCE) for each width profile."""
    from anomalens.explain.counterfactual_training import train_explainer

    from anomalens.explain.counterfactual import PROFILES

    run_dir = root / "mnist_7_bce"
    _, detector, data = load_run(run_dir)
    rows = {}
    for profile in profiles or list(PROFILES):
        for d_every, warm in ((1, 0), (5, 0), (1, 10)) if profile != "paper" else ((1, 0),):
            cfg = CEConfig.recipe("cpu", profile=profile, steps=1, warmup_steps=warm, d_every=d_every, progress=False,
                                  sample_every=0, minutes=None)
            explainer = CounterfactualExplainer(data.image_shape, cfg)
            train_explainer(explainer, detector, data, log=lambda *a: None)  # first step: allocation
            cfg.steps = 4 if profile == "paper" else 11
            started = time.perf_counter()
            train_explainer(explainer, detector, data, log=lambda *a: None)
            seconds = (time.perf_counter() - started) / (cfg.steps - 1)
            name = f"{profile}, D every {d_every}" + (", warm-up step" if warm else "")
            rows[name] = {"seconds_per_step": seconds, "widths": PROFILES[profile]}
            print(f"{name}: {seconds:.2f} s/step", flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "counterfactual_cost.json").write_text(json.dumps(
        {"date": str(date.today()), "machine": machine(), "bf16": True, "channels_last": True,
         "command": "python benchmarks/bench_counterfactual.py cost", "profiles": rows}, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suite", choices=sorted([*SUITES, "cost"]))
    parser.add_argument("--classes", help="mnist: normal classes, e.g. 7,0")
    parser.add_argument("--detectors", help="mnist: e.g. bce,hsc")
    parser.add_argument("--variants", help="recipes: e.g. rec20_gan5,rec10_gan5")
    parser.add_argument("--profiles", help="cost: e.g. cpu,tiny (paper costs ~40 s per step here)")
    parser.add_argument("--minutes", type=float, default=12.0, help="explainer time budget per scenario")
    parser.add_argument("--steps", type=int, help="explainer steps (default: the cpu recipe's)")
    parser.add_argument("--root", default="runs/bench_ce", help="where the run folders go")
    args = parser.parse_args()
    root = Path(args.root)
    if args.suite == "cost":
        step_cost(root, args.profiles.split(",") if args.profiles else None)
        return
    scenarios = SUITES[args.suite]
    if args.classes:
        scenarios = [s for s in scenarios if s[1]["normal"] in args.classes.split(",")]
    if args.detectors:
        scenarios = [s for s in scenarios if s[1]["detector"] in args.detectors.split(",")]
    if args.variants:
        scenarios = [s for s in scenarios if s[0].partition("/")[2] in args.variants.split(",")]
    results: dict[str, dict] = {}
    out_json = RESULTS / f"counterfactual_{args.suite}.json"
    if out_json.exists():
        results = json.loads(out_json.read_text()).get("scenarios", {})
    for name, job_dict in scenarios:
        run_name, _, variant = name.partition("/")
        run_dir = root / run_name
        job = TrainJob(**{**job_dict, "milestones": tuple(job_dict["milestones"])})
        trained = run_dir / "metrics.json"
        if not trained.exists() or "ad_auroc" not in json.loads(trained.read_text()):
            run_training(job, run_dir, progress=False)
        folder = f"counterfactual_{variant}" if variant else "counterfactual"
        explained = run_dir / "explain" / folder
        oracle = root / f"oracle_{job.dataset}{'_colored' if job.colored else ''}.safetensors"
        started = time.perf_counter()
        if (explained / "report.html").exists():  # finished earlier (maybe by another suite): reuse it
            metrics = json.loads((explained / "metrics.json").read_text())
        else:
            overrides = {"minutes": args.minutes, **({"steps": args.steps} if args.steps else {}),
                         **RECIPE_VARIANTS.get(variant, {})}
            metrics = explain_counterfactuals(run_dir, CEConfig.recipe("cpu", **overrides), oracle_path=oracle,
                                              folder=folder)
        row = {k: metrics.get(k) for k in KEYS}
        row.update(oracle_factor_changes=metrics.get("oracle_factor_changes"), fid_features=metrics.get("fid_features"),
                   cf_scores=metrics["scores"]["counterfactuals"], eval_wall_seconds=time.perf_counter() - started,
                   paper=paper_figures(job.dataset, job.colored, job.detector, job.normal))
        if args.suite == "bias":
            row["oracle_validity_non_blue"] = non_blue_validity(run_dir, oracle)
        grid = RESULTS / f"counterfactual_{name.replace('/', '_')}.png"
        shutil.copyfile(explained / "counterfactuals.png", grid)
        results[name] = row
        _write(args.suite, results)
        print(f"{name}: " + ", ".join(f"{k} {row[k]:.3f}" for k in KEYS[:8] if row.get(k) is not None))


def _write(suite: str, results: dict[str, dict]) -> None:
    RESULTS.mkdir(exist_ok=True)
    payload = {"date": str(date.today()), "machine": machine(), "threads": torch.get_num_threads(),
               "command": f"python benchmarks/bench_counterfactual.py {suite}", "scenarios": results}
    (RESULTS / f"counterfactual_{suite}.json").write_text(json.dumps(payload, indent=2))
    cols = ("ad_auroc", "cf_auroc", "concept_acc", "sub_auroc", "fid_n", "oracle_validity", "train_seconds")
    lines = [f"# Counterfactual benchmark: {suite}", "", f"{date.today()}, {machine()}", "",
             "| scenario | " + " | ".join(cols) + " | paper (cf / concept / sub) |",
             "|---" * (len(cols) + 2) + "|"]
    for name, row in results.items():
        paper = row.get("paper") or {}
        cells = [f"{row[c]:.3f}" if isinstance(row.get(c), float) else "—" for c in cols]
        ref = " / ".join(f"{paper[k]:.2f}" for k in ("cf_auroc", "concept_acc", "sub_auroc")) if paper else "—"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {ref} |")
    (RESULTS / f"counterfactual_{suite}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

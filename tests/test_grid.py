"""Grids of runs: expansion and hashing, validation before any run, status markers, the collector's
mean ± std (checked by hand), resume after a kill with a failed run beside it, and the Ray launcher on
a real local Ray instance against the local launcher."""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from anomalens import cli_grid
from anomalens.errors import ConfigError
from anomalens.experiments import collect, grid_state
from anomalens.experiments.grid import RESOLVED, RESULT, check_grid, config_hash, expand, load_grid, run_grid

F_SETPIPE_SZ = 1031  # linux/fcntl.h
TINY = {"dataset": "glyphs", "detector": "hsc", "oe": "glyph_letters", "oe_size": 128, "epochs": 1,
        "batch_size": 64}


def write_grid(folder: Path, **spec) -> Path:
    path = folder / "grid.yaml"
    path.write_text(yaml.safe_dump({"name": "tiny", "base": dict(TINY), **spec}, sort_keys=False))
    return path


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker processes (spawned, or Ray's) do not see conftest's monkeypatched cache: point them at a
    temporary one through the environment."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


# ------------------------------------------------------------------------------- expansion, hashing


def test_expansion_and_hashing(tmp_path: Path) -> None:
    path = write_grid(tmp_path, grid={"detector": ["hsc", "bce"], "normal": ["3", 5]}, seeds=2,
                      overrides=[{"when": {"detector": "bce"}, "set": {"oe_size": 64}}])
    runs = check_grid(path)
    assert len(runs) == 8 and len({r.name for r in runs}) == 8
    assert [r.point["seed"] for r in runs] == [0] * 4 + [1] * 4  # seed-major: early tables cover every row
    first = runs[0]
    assert first.name.startswith("glyphs-hsc-3-s0-") and first.name.endswith(config_hash(first.config))
    assert first.config["train"]["epochs"] == 1 and first.config["train"]["lr"] == 1e-3  # defaults filled in
    assert {r.config["train"]["oe_size"] for r in runs if r.point["detector"] == "bce"} == {64}
    assert runs[1].config["train"]["normal"] == "5"  # 5 and "5" are one run

    # the same resolved config gives the same folder, however it is written
    same = write_grid(tmp_path, grid={"normal": ["3", "5"], "detector": ["hsc", "bce"]}, seeds=[0, 1],
                      overrides=[{"when": {"detector": ["bce"]}, "set": {"oe_size": 64}}])
    assert {r.name for r in check_grid(same)} == {r.name for r in runs}
    assert {r.name for r in check_grid(path, sets=("data_root=/elsewhere",))} == {r.name for r in runs}
    # a changed key gives new folders; --set replaces a grid axis; seeds select the runs
    changed = check_grid(path, sets=("epochs=2",))
    assert not {r.name for r in changed} & {r.name for r in runs}
    assert [r.name for r in check_grid(path, sets=("normal=3", "seeds=[1]"))] == \
        [r.name for r in runs if r.point["normal"] == "3" and r.point["seed"] == 1]
    # --set has the last word: an override no longer sets that key
    assert {r.config["train"]["oe_size"] for r in check_grid(path, sets=("oe_size=32",))} == {32}

    # the paper-scale recipe and an explain step
    path = write_grid(tmp_path, grid={"normal": ["3"]}, explain={"method": "heatmap"},
                      paper={"base": {"epochs": 80}, "seeds": 4, "explain": {"shown": 4}})
    cpu, paper = check_grid(path), check_grid(path, scale="paper")
    assert len(cpu) == 1 and len(paper) == 4 and paper[0].config["train"]["epochs"] == 80
    assert cpu[0].name.startswith("glyphs-hsc-3-heatmap-s0-")
    assert cpu[0].config["explain"] == {"method": "heatmap", "shown": 12}
    assert paper[0].config["explain"]["shown"] == 4


@pytest.mark.parametrize(("spec", "message"), [
    ({"base": {**TINY, "epoch": 3}}, r"unknown setting\(s\) \['epoch'\]"),
    ({"base": {**TINY, "epochs": "two"}}, "epochs: expected an integer"),
    ({"grid": {"normal": "3"}}, "grid: normal: expected a non-empty list"),
    ({"grid": {"detector": ["hsc", "svm"]}}, "run detector=svm.*unknown detector 'svm'"),
    ({"base": {**TINY, "dataset": "mnits"}}, "dataset: unknown dataset 'mnits'"),
    ({"base": {**TINY, "oe": "glyph_letters@val"}}, r"oe: OE 'glyph_letters@val'.*NAME@SPLIT"),
    ({"base": {**TINY, "oe": "glyph_letters@test+kmnst"}}, "oe: unknown dataset 'kmnst'"),
    ({"base": {**TINY, "seed": 1}}, "seed is not a grid or base key.*seeds"),
    ({"seeds": 0}, "seeds: 0 runs nothing"),
    ({"explain": {"method": "counterfactual", "stepz": 5}}, r"explain \(counterfactual\): unknown key\(s\) \['stepz"),
    ({"explain": {"method": "lime"}}, "method: 'lime' is unknown"),
    ({"overrides": [{"when": {"detektor": "hsc"}, "set": {"epochs": 2}}]}, "when: 'detektor' is not a TrainJob key"),
    ({"tabel": "ce"}, r"unknown setting\(s\) \['tabel'\]"),
])
def test_invalid_grid_refused_before_any_run(tmp_path: Path, capsys, spec: dict, message: str) -> None:
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"base": dict(TINY), "grid": {"normal": ["3"]}, **spec}))
    with pytest.raises(ConfigError, match=message):
        check_grid(path)
    assert cli_grid.main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("anomalens: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # refused before anything was written


# --------------------------------------------------------------------------------- status markers


def test_status_locks_and_eta(tmp_path: Path) -> None:
    folders = {name: tmp_path / name for name in ("a", "b", "c", "d", "e")}
    for folder in folders.values():
        folder.mkdir()
    grid_state.mark_done(folders["a"], 10.0)
    grid_state.mark_done(folders["b"], 20.0)
    lock = grid_state.claim(folders["c"])  # live: this process
    assert lock is not None and grid_state.claim(folders["c"]) is None  # nobody else can take it
    stale = {"pid": 2 ** 22 + 12345, "host": socket.gethostname(), "heartbeat": time.time()}
    (folders["d"] / grid_state.RUNNING).write_text(json.dumps(stale))  # a killed worker's lock
    grid_state.mark_failed(folders["e"], ValueError("bad value\nsecond line"))
    summary = grid_state.summarize(folders)
    assert summary.counts == {"done": 2, "running": 1, "failed": 1, "pending": 1}
    assert summary.mean_seconds == 15.0 and summary.eta_seconds() == 30.0  # 2 left, 1 running at a time
    assert summary.failures == {"e": "ValueError: bad value"}
    taken = grid_state.claim(folders["d"])  # a stale lock is taken over
    assert taken is not None and json.loads((folders["d"] / "running").read_text())["pid"] == os.getpid()
    with lock:
        pass
    assert grid_state.status(folders["c"]) == "pending" and not (folders["c"] / "running").exists()


# ------------------------------------------------------------------------------------- collector


def fake_run(out: Path, name: str, train: dict, metrics: dict, explain: dict | None = None) -> None:
    folder = out / "runs" / name
    folder.mkdir(parents=True)
    (folder / RESOLVED).write_text(yaml.safe_dump({"train": train, "explain": explain}))
    (folder / RESULT).write_text(json.dumps(metrics))
    grid_state.mark_done(folder, 1.0)


def test_ce_table_prints_steps_and_seconds_whole(tmp_path: Path) -> None:
    out = tmp_path / "grid"
    for seed, seconds in enumerate((100.4, 102.4)):
        train = {"dataset": "mnist", "colored": False, "detector": "bce", "normal": "7", "oe": "kmnist", "seed": seed}
        fake_run(out, f"7-{seed}", train, {"l1_change": 0.08 + seed / 100, "explain_steps": 600,
                                           "explain_train_seconds": seconds}, {"method": "counterfactual"})
    md = collect.render(collect.ce_tables(collect.group(collect.finished_runs(out))), "md")
    assert "| L1 change | Steps | Explainer s |" in md and "| 7 | 0.085 ± 0.005 | 600 ± 0 | 101 ± 1 |" in md


def test_collector_mean_std_by_hand(tmp_path: Path) -> None:
    out = tmp_path / "grid"
    values = {"7": [0.9, 0.8, 0.7], "0,1": [0.5, 0.6, 0.7]}
    for normal, aurocs in values.items():
        for seed, auroc in enumerate(aurocs):
            train = {"dataset": "mnist", "colored": False, "detector": "bce", "normal": normal, "oe": "kmnist",
                     "seed": seed}
            fake_run(out, f"{normal}-{seed}", train, {"ad_auroc": auroc, "cf_auroc": 0.5 + seed / 10},
                     {"method": "counterfactual", "seed": seed, "steps": 10})
    (out / "runs" / "7-3").mkdir()  # pending: not collected
    (tables,) = [collect.ce_tables(collect.group(collect.finished_runs(out)), {"normal": {"0,1": "zero+one"}})]
    table = tables[0]
    assert table.title == "mnist, detector bce, OE kmnist, explain counterfactual"
    rows = dict(table.rows)
    # by hand: mean 0.8, population std sqrt((0.01 + 0 + 0.01) / 3)
    assert rows["7"]["ad_auroc"].mean == pytest.approx(0.8)
    assert rows["7"]["ad_auroc"].std == pytest.approx(math.sqrt(0.02 / 3))
    assert rows["7"]["ad_auroc"].n == 3 and rows["zero+one"]["ad_auroc"].mean == pytest.approx(0.6)
    assert rows["7"]["ad_auroc"].paper == 0.96 and rows["zero+one"]["ad_auroc"].paper == 0.97  # Tables 5, 17
    assert rows["mean"]["ad_auroc"].mean == pytest.approx(0.7) and rows["mean"]["ad_auroc"].std == pytest.approx(0.1)
    assert rows["mean"]["ad_auroc"].paper == pytest.approx((0.96 + 0.97) / 2)
    assert rows["7"]["cf_auroc"].std == pytest.approx(math.sqrt(0.02 / 3))
    assert table.columns == ["ad_auroc", "cf_auroc"]  # columns no run has are left out

    md = collect.render(tables, "md")
    assert "| 7 | 0.800 ± 0.082 [0.96] | 0.600 ± 0.082 [0.70] |" in md and "| **mean** | 0.700 ± 0.100" in md
    lines = collect.render(tables, "csv").splitlines()
    assert lines[0] == "table,row,column,mean,std,n,paper" and len(lines) == 1 + 3 * 2
    (line,) = [line for line in lines if line.startswith(f'"{table.title}",7,ad_auroc,')]
    assert float(line.split(",")[-4]) == pytest.approx(0.8) and line.endswith(",3,0.96")
    tex = collect.render(tables, "latex")
    assert r"7 & 0.80 $\pm$ 0.08 (0.96) & 0.60 $\pm$ 0.08 (0.70) \\" in tex and r"\bottomrule" in tex

    # OE Table 1 layout and the OE-size curve, over classes; a plain `anomalens train` folder counts too
    out = tmp_path / "sweep"
    for detector, base in (("hsc", 0.9), ("bce", 0.7)):
        for normal in ("3", "4"):
            for size in (1, 8, None):
                auroc = base + (0.05 if normal == "4" else 0) + (0.02 if size is None else 0)
                train = {"dataset": "mnist", "colored": False, "detector": detector, "normal": normal,
                         "oe_size": size, "seed": 0}
                fake_run(out, f"{detector}-{normal}-{size}", train, {"ad_auroc": auroc})
    plain = out / "runs" / "plain"
    plain.mkdir()
    (plain / "config.yaml").write_text(yaml.safe_dump({"dataset": "mnist", "colored": False, "detector": "hsc",
                                                       "normal": "3", "oe_size": 1, "seed": 1}))
    (plain / "metrics.json").write_text(json.dumps({"ad_auroc": 0.8}))
    grid_state.mark_done(plain, 1.0)
    groups = collect.group(collect.finished_runs(out))
    (curve,) = [collect.curve(groups, tmp_path / "curve.png")]
    assert curve.columns == ["1", "8", "all"] and (tmp_path / "curve.png").stat().st_size > 1000
    hsc = dict(curve.rows)["mnist, detector hsc"]
    # class 3 at size 1: seeds 0.9 and 0.8 -> 0.85; class 4: 0.95; over classes 0.9 ± 0.05
    assert hsc["1"].mean == pytest.approx(0.9) and hsc["1"].std == pytest.approx(0.05) and hsc["1"].paper is None
    assert hsc["all"].mean == pytest.approx(0.945) and hsc["all"].paper == pytest.approx((0.985 + 0.967) / 2)
    oe = collect.oe_table([g for g in groups if g.get("oe_size") is None])
    assert sorted(oe.columns) == ["bce", "hsc"] and oe.rows[0][1]["bce"].mean == pytest.approx(0.745)
    # keys an override sets per detector (Deep SVDD: no OE, another lr) make no row of their own
    fake_run(out, "dsvdd-3", {"dataset": "mnist", "colored": False, "detector": "dsvdd", "normal": "3", "oe": None,
                              "lr": 1e-4, "seed": 0}, {"ad_auroc": 0.8})
    oe = collect.oe_table([g for g in collect.group(collect.finished_runs(out)) if g.get("oe_size") is None])
    assert [label for label, _ in oe.rows] == ["mnist"] and sorted(oe.columns) == ["bce", "dsvdd", "hsc"]


# ------------------------------------------------------------------------- real runs, resume, Ray


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_failed_run_isolated_and_resume_after_kill(tmp_path: Path, mini_glyphs: Path, capsys) -> None:
    # one run fails (no class "x"), one finishes, one is killed after its first checkpoint (of 12, one per
    # 25-step epoch: glyph digits and letters as MNIST and KMNIST files, conftest's mini_glyphs; the 275 steps
    # left, ~3 s, are the margin for the kill to land before the run ends)
    path = tmp_path / "grid.yaml"
    base = {**TINY, "dataset": "mnist", "oe": "kmnist", "data_root": str(mini_glyphs), "batch_size": 8}
    path.write_text(yaml.safe_dump({"name": "tiny", "base": base, "grid": {"normal": ["x", "3", "5"]},
                                    "overrides": [{"when": {"normal": "5"}, "set": {"epochs": 12}}]}, sort_keys=False))
    failing, finished, killed = (tmp_path / "out" / "runs" / r.name for r in check_grid(path))
    command = [sys.executable, "-m", "anomalens.cli_grid", "run", str(path), "--out", str(tmp_path / "out"),
               "--workers", "1", "--threads-per-worker", "1"]
    with open(tmp_path / "first.log", "w") as log:
        grid = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_for(lambda: any((killed / "checkpoints").glob("*.safetensors")), 120, "a checkpoint")
            workers = _children(grid.pid)
            os.kill(grid.pid, signal.SIGKILL)  # the grid process crashes; its worker must not train on
            grid.wait()
            _wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers), 30, "the orphaned worker")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(grid.pid, signal.SIGKILL)
    assert workers and grid_state.status(failing) == "failed" and "ScenarioError" in grid_state.failure(failing)
    assert grid_state.status(finished) == "done" and grid_state.status(killed) != "done"
    _wait_for(lambda: grid_state.status(killed) == "pending", 10, "the lock to go stale")  # its pid is dead
    done_before = (finished / "done").stat().st_mtime_ns, (finished / "detector.safetensors").stat().st_mtime_ns

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert rerun.returncode == 2 and "1 of 3 runs failed" in rerun.stderr  # the failure is reported, once
    assert "3 runs, 1 done, 0 running elsewhere, 2 to run (1 of them failed before)" in rerun.stdout
    assert ((finished / "done").stat().st_mtime_ns, (finished / "detector.safetensors").stat().st_mtime_ns) \
        == done_before  # not retrained
    assert grid_state.status(killed) == "done" and grid_state.status(failing) == "failed"
    info = json.loads((killed / "run.json").read_text())
    assert len(info["resumed_at"]) == 1 and (killed / "log.txt").read_text().count("== ") == 2
    assert json.loads((killed / RESULT).read_text())["ad_auroc"] > 0.5

    assert cli_grid.main(["status", str(tmp_path / "out")]) == 0
    status = capsys.readouterr().out
    assert "3 runs: 2 done, 0 running, 1 failed, 0 pending" in status and f"failed: {failing.name}: " in status


def _children(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow  # Ray registers its head under the machine's network address even with --node-ip-address
# 127.0.0.1; where only loopback traffic is allowed (CI here) run it by hand: python -m pytest -m slow -k ray
def test_ray_launcher_matches_local_launcher(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'anomalens[ray]'); the ray launcher "
                                      "is tested where it is")
    ray_cli = Path(sys.executable).parent / "ray"
    if not ray_cli.exists():
        pytest.skip(f"the ray command is not next to {sys.executable}")
    spec = load_grid(write_grid(tmp_path, grid={"normal": ["3", "5"]}))
    port = _free_port()
    # --block keeps `ray start` in the foreground, in its own session: stopping it by its process group
    # stops exactly the Ray processes this test started (not other users' Ray instances)
    head = subprocess.Popen([str(ray_cli), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                             "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats", "--block"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        local = run_grid(spec, tmp_path / "local", "local", workers=2, threads=1, log=lambda line: None)
        _wait_for(lambda: _port_open(port), 60, "the Ray head")
        on_ray = run_grid(spec, tmp_path / "ray", "ray", threads=1, address=f"127.0.0.1:{port}",
                          log=lambda line: None)
    finally:
        os.kill(head.pid, signal.SIGTERM)  # `ray start` drains the node and stops what it started (~3 s)
        try:
            head.wait(timeout=30)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(head.pid, signal.SIGKILL)  # anything of its process group left behind
            head.wait()
    assert local.counts["done"] == 2
    assert on_ray.counts["done"] == 2
    for run in check_grid(tmp_path / "grid.yaml"):
        ours, theirs = (json.loads((tmp_path / launcher / "runs" / run.name / RESULT).read_text())
                        for launcher in ("local", "ray"))
        for key in ("ad_auroc", "score_distance"):
            assert ours[key] == theirs[key], (run.name, key)


def test_a_closed_pipe_ends_the_listing_quietly(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    """`anomalens grid run ... --dry-run | head -1`, in this process (a subprocess spends ~10 s importing): the
    listing goes to a 4 kB pipe whose reader takes one line's worth and closes it; the command must end with
    status 0 and say nothing, and stdout must be left writable (no second error when it is flushed at exit)."""
    from anomalens import cli

    path = write_grid(tmp_path, grid={"normal": [str(c) for c in range(10)]}, seeds=20)  # 200 lines, ~10 kB
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, F_SETPIPE_SZ, 4096)  # a pipe smaller than the listing: it must block
    first: list[bytes] = []

    def head_1() -> None:  # at most 64 + 4096 bytes ever leave the writer: the rest meets a closed pipe
        try:
            first.append(os.read(read_end, 64))
        finally:
            os.close(read_end)  # what `head -1` does

    reader = threading.Thread(target=head_1)
    reader.start()
    stdout = open(write_end, "w", buffering=1)  # noqa: SIM115 -- line-buffered, as a terminal; closed below
    monkeypatch.setattr(sys, "stdout", stdout)
    status = cli.main(["grid", "run", str(path), "--out", str(tmp_path / "out"), "--dry-run"])
    reader.join(timeout=60)
    stdout.close()  # what the interpreter does at exit: raises BrokenPipeError unless the CLI re-pointed stdout
    monkeypatch.undo()
    assert first and first[0].startswith(b"glyphs-hsc-0-s0-")
    assert status == 0 and capsys.readouterr().err == ""


@pytest.mark.slow  # ~90 s: the OE sweeps expand to thousands of runs (it found ce_cifar10's broken paper scale)
@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "grids").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_grid_expands_at_both_scales(path: Path) -> None:
    spec = load_grid(path)
    assert expand(spec, str(path))
    if spec.paper:
        assert expand(load_grid(path, scale="paper"), str(path))


def test_gtsrb_pairs_train_enough_steps_at_cpu_scale_and_the_papers_epochs_at_paper_scale() -> None:
    path = Path(__file__).parents[1] / "grids" / "ce_gtsrb.yaml"
    epochs = {scale: {r.config["train"]["normal"]: r.config["train"]["epochs"]
                      for r in expand(load_grid(path, scale=scale, sets=("grid.detector=[bce]",)))}
              for scale in ("cpu", "paper")}
    assert epochs["cpu"]["1,2"] == 60 and epochs["cpu"]["6,32,41,42"] == 30  # 100 images per class locally
    assert epochs["cpu"]["33,34,35,36,37,38,39,40"] == 12
    assert set(epochs["paper"].values()) == {200}


def test_a_grids_explainer_steps_keep_the_recipes_warmup_share_as_the_cli_does() -> None:
    from anomalens.explain.counterfactual import CEConfig

    grids = Path(__file__).parents[1] / "grids"
    sets = ("grid.normal=['0']", "grid.detector=[bce]")

    def explain(*extra: str, path: Path = grids / "ce_cifar10.yaml") -> dict:  # a file that sets no budget
        (run,) = expand(load_grid(path, sets=(*sets, *extra)))
        return run.config["explain"]

    assert explain()["warmup_steps"] == CEConfig.recipe("cpu").warmup_steps == 200
    for name, normal in (("ce_mnist", "7"), ("ce_colored_mnist", "red or one"), ("ce_gtsrb", "'1,2'")):
        tuned = explain(f"grid.normal=[{normal}]", path=grids / f"{name}.yaml")  # these files set 2,000 / 200
        assert (tuned["steps"], tuned["warmup_steps"]) == (2000, 200), name
    # at paper scale those two are the cpu recipe's tuning, so the paper recipe's own budget replaces them
    (paper,) = expand(load_grid(grids / "ce_mnist.yaml", scale="paper", sets=(*sets[1:], "grid.normal=[7]", "seeds=1")))
    assert (paper.config["explain"]["steps"], paper.config["explain"]["warmup_steps"]) == (33_000, 0)
    assert paper.config["explain"]["oracle_limit"] is None and paper.config["explain"]["profile"] == "paper"
    assert explain("explain.steps=2000")["warmup_steps"] == CEConfig.recipe("cpu", steps=2000).warmup_steps == 667
    assert explain("explain.steps=2000", "explain.warmup_steps=0")["warmup_steps"] == 0  # an explicit warm-up wins

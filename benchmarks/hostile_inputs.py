"""Hostile input, tried as a user would: every case runs the real ``anomalens`` command in a fresh
process and is classified by what the user sees.

- named error: exit code 2, exactly one ``anomalens: error:`` line, no traceback, and the line names
  the file or value at fault (or says "Fix");
- conversion: exit 0 with a warning that names the file (a documented conversion);
- traceback: a Python traceback reached the terminal;
- silently accepted: exit 0 although the input was bad (no warning);
- other: anything else (e.g. an error line without file, value or fix).

Run: ``python benchmarks/hostile_inputs.py [--out DIR]``; prints the table for RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image


def anomalens(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "anomalens.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def classify(result: subprocess.CompletedProcess, expect_warning: bool = False) -> str:
    err = result.stderr
    if "Traceback (most recent call last)" in err:
        return "traceback"
    if result.returncode == 0:
        return "conversion" if expect_warning and "Warning" in err else "silently accepted"
    lines = [line for line in err.splitlines() if line.startswith("anomalens: error:")]
    if result.returncode == 2 and len(lines) == 1:
        return "named error"
    return "other"


def make_files(root: Path, run: Path) -> dict[str, Path]:
    """Damaged copies of a real detector file and hostile image folders."""
    from safetensors import safe_open
    from safetensors.torch import load_file
    from safetensors.torch import save as safetensors_bytes

    good = run / "detector.safetensors"
    tensors = load_file(good)
    with safe_open(good, "pt") as f:
        header = f.metadata()
    key = next(k for k, v in tensors.items() if v.is_floating_point() and v.numel() > 1)
    files: dict[str, Path] = {}

    def write(name: str, tensors=tensors, **meta) -> None:
        files[name] = root / f"{name}.safetensors"
        files[name].write_bytes(safetensors_bytes(tensors, metadata={**header, **meta}))

    nan = dict(tensors)
    nan[key] = nan[key].clone()
    nan[key].view(-1)[0] = float("nan")
    write("nan_weights", nan)
    flipped = dict(tensors)
    flipped[key] = flipped[key].clone()
    flipped[key].view(-1)[0] *= -1  # the sign bit flipped: finite, plausible, wrong
    write("bit_flip", flipped)
    config = json.loads(header["config"])
    config["net"]["conv"] = [10**9] * len(config["net"]["conv"])
    write("huge_config", config=json.dumps(config))
    write("config_not_json", config="{oops")
    files["config_missing"] = root / "config_missing.safetensors"
    files["config_missing"].write_bytes(safetensors_bytes(tensors, metadata={k: v for k, v in header.items()
                                                                             if k != "config"}))
    files["truncated"] = root / "truncated.safetensors"
    files["truncated"].write_bytes(good.read_bytes()[:100])
    files["empty"] = root / "empty.safetensors"
    files["empty"].write_bytes(b"")
    files["pickle"] = root / "model.pt"
    files["pickle"].write_bytes(b"\x80\x04\x95" + b"cos\nsystem\n" * 3)
    files["huge_header"] = root / "huge_header.safetensors"
    files["huge_header"].write_bytes(struct.pack("<Q", 2**62) + b"{}")

    def folder(name: str, images: dict[str, object]) -> None:
        path = root / name
        path.mkdir()
        for file, content in images.items():
            if isinstance(content, bytes):
                (path / file).write_bytes(content)
            else:
                content.save(path / file)
        files[name] = path

    folder("images_16bit", {"a.png": Image.fromarray(np.full((28, 28), 60000, np.uint16))})
    folder("images_not_images", {"a.png": b"this is not a png", "b.jpg": b"\xff\xd8\xff"})
    folder("images_empty", {})
    folder("images_huge_dims", {"a.png": Image.new("L", (30000, 30000))})
    yaml_files = {"config_list": "- 1\n- 2\n", "config_bad_yaml": "epochs: [1\n", "config_unknown": "epoch: 3\n",
                  "config_wrong_type": "epochs: many\n", "config_binary": "\x00\x01\x02"}
    for name, text in yaml_files.items():
        files[name] = root / f"{name}.yaml"
        files[name].write_text(text)
    files["a_file"] = root / "a_file"
    files["a_file"].write_text("x")
    return files


def cases(run: Path, f: dict[str, Path], out: Path) -> list[tuple[str, list[str], bool]]:
    """(description, argv, a warning-conversion is the right answer)."""
    train = ["train", "--dataset", "glyphs", "--normal", "3", "--detector", "hsc", "--oe", "glyph_letters",
             "--oe-size", "64", "--epochs", "1", "--batch-size", "32"]
    explain_file = ["explain", "--dataset", "glyphs", "--normal", "3", "--method", "gradient", "--detector"]
    result = [
        ("train: unknown dataset", [*train[:2], "mnsit", *train[3:], "--out", str(out / "t1")], False),
        ("train: unknown normal class", [*train[:4], "12", *train[5:], "--out", str(out / "t2")], False),
        ("train: unknown OE set", [*train[:8], "kmnsit", *train[9:], "--out", str(out / "t3")], False),
        ("train: --lr 1e6", [*train, "--lr", "1e6", "--out", str(out / "t4")], False),
        ("train: --lr -1", [*train, "--lr", "-1", "--out", str(out / "t5")], False),
        ("train: --epochs 0", [*train, "--epochs", "0", "--out", str(out / "t6")], False),
        ("train: --batch-size 1", [*train, "--batch-size", "1", "--out", str(out / "t7")], False),
        ("train: --oe-size 0", [*train[:10], "0", *train[11:], "--out", str(out / "t8")], False),
        ("train: --out is a file", [*train, "--out", str(f["a_file"])], False),
        ("train: --out inside a file", [*train, "--out", str(f["a_file"] / "run")], False),
        ("train: other config into a finished run", [*train[:6], "bce", *train[7:], "--out", str(run)], False),
        ("train: --device cuda without a GPU", [*train, "--device", "cuda", "--out", str(out / "t9")], False),
        ("train: --image-size 0 on defects", ["train", "--dataset", "synthetic_defects/grid", "--detector", "ae",
                                              "--image-size", "0", "--out", str(out / "t10")], False),
        ("train: flow on 30 px images", ["train", "--dataset", "synthetic_defects/grid", "--detector", "flow",
                                         "--image-size", "30", "--epochs", "1", "--out", str(out / "t11")], False),
        ("train: supervised without known anomalies", [*train[:6], "supervised", *train[7:], "--out",
                                                       str(out / "t12")], False),
    ]
    for name in ("config_list", "config_bad_yaml", "config_unknown", "config_wrong_type", "config_binary"):
        result.append((f"train: YAML {name[7:]}", ["train", str(f[name]), "--out", str(out / name)], False))
    result.append(("train: YAML file missing", ["train", str(out / "nope.yaml"), "--out", str(out / "t13")], False))
    for name in ("nan_weights", "bit_flip", "huge_config", "config_not_json", "config_missing", "truncated", "empty",
                 "pickle", "huge_header"):
        result.append((f"explain --detector: {name.replace('_', ' ')}", [*explain_file, str(f[name]), "--out",
                                                                         str(out / f"x_{name}")], False))
    result += [
        ("explain --detector: missing file", [*explain_file, str(out / "none.safetensors"), "--out",
                                              str(out / "x_none")], False),
        ("explain --detector onto an existing run", [*explain_file, str(run / "detector.safetensors"), "--out",
                                                     str(run)], False),
        ("explain --detector without --out", explain_file + [str(run / "detector.safetensors")], False),
        ("explain: not a run folder", ["explain", str(out)], False),
        ("explain: run folder does not exist", ["explain", str(out / "missing")], False),
        ("explain: repair on a non-decomposable detector", ["explain", str(run), "--method", "repair", "--profile",
                                                            "tiny", "--steps", "2"], False),
        ("explain: counterfactual --steps 0", ["explain", str(run), "--method", "counterfactual", "--steps", "0"],
         False),
        ("explain: counterfactual --concepts 100000", ["explain", str(run), "--method", "counterfactual",
                                                       "--concepts", "100000"], False),
        ("explain: counterfactual --profile huge", ["explain", str(run), "--method", "counterfactual", "--profile",
                                                    "huge"], False),
        ("explain: counterfactual --recipe fast", ["explain", str(run), "--method", "counterfactual", "--recipe",
                                                   "fast"], False),
        ("explain: counterfactual --lr 0", ["explain", str(run), "--method", "counterfactual", "--lr", "0"], False),
        ("data info: unknown dataset", ["data", "info", "mnsit"], False),
        ("data download: unknown dataset", ["data", "download", "mnsit"], False),
        ("data download: built-in dataset", ["data", "download", "glyphs"], False),
    ]
    return result


def image_cases(run: Path, f: dict[str, Path]) -> list[tuple[str, list[str], bool]]:
    """Cases that need the run's trained explainer."""
    base = ["explain", str(run), "--method", "counterfactual", "--images"]
    return [
        ("explain --images: 16-bit PNG", [*base, str(f["images_16bit"])], True),
        ("explain --images: files that are not images", [*base, str(f["images_not_images"])], False),
        ("explain --images: empty folder", [*base, str(f["images_empty"])], False),
        ("explain --images: 30000 x 30000 px image", [*base, str(f["images_huge_dims"])], False),
        ("explain --images: folder does not exist", [*base, str(f["images_empty"] / "nope")], False),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help="working folder (default: a temporary one)")
    args = parser.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="hostile-"))
    root.mkdir(parents=True, exist_ok=True)
    run = root / "run"
    setup = anomalens("train", "--dataset", "glyphs", "--normal", "3", "--detector", "hsc", "--oe", "glyph_letters",
                      "--oe-size", "64", "--epochs", "1", "--batch-size", "32", "--out", str(run), cwd=root)
    assert setup.returncode == 0, setup.stderr
    files = make_files(root, run)
    todo = cases(run, files, root / "out")
    first = anomalens("explain", str(run), "--method", "counterfactual", "--profile", "tiny", "--steps", "2",
                      "--no-sub-auroc", "--oracle-epochs", "1", "--oracle-images", "300", cwd=root)
    assert first.returncode == 0, first.stderr
    todo += image_cases(run, files)
    rows, counts = [], {}
    for description, argv, conversion in todo:
        result = anomalens(*argv, cwd=root)
        verdict = classify(result, conversion)
        counts[verdict] = counts.get(verdict, 0) + 1
        message = next((line for line in result.stderr.splitlines() if line.startswith("anomalens: error:")), "")
        rows.append((description, verdict, message[len("anomalens: error: "):][:150]))
        print(f"{verdict:18} {description}: {message[:160]}", flush=True)
    print("\n| cases tried | named errors | conversions | tracebacks | silently accepted | other |")
    print("|---|---|---|---|---|---|")
    print(f"| {len(rows)} | {counts.get('named error', 0)} | {counts.get('conversion', 0)} | "
          f"{counts.get('traceback', 0)} | {counts.get('silently accepted', 0)} | {counts.get('other', 0)} |")


if __name__ == "__main__":
    main()

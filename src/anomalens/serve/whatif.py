"""What the what-if page asks for, answered without any web framework: for one image (a test image
of the run or an upload) and one run, the detector's score and verdict, the heatmap, the K
counterfactuals at the slider's target score alpha, the repair with its AR-Pro properties.

Images go out as PNG data URIs, so the page needs no second request (and nothing from outside).
Every answer is a plain dict; a problem the user can fix raises an ``AnomalensError`` whose message
the page shows as is.
"""

from __future__ import annotations

import base64
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from torch import Tensor

from anomalens.errors import AnomalensError, ConfigError
from anomalens.experiments.run_explainers import RunExplainers
from anomalens.experiments.user_images import conform, decode_image_bytes
from anomalens.explain.counterfactual_losses import ALPHAS
from anomalens.metrics.properties import METRICS, PROPERTIES
from anomalens.report.overlay import overlay, png_bytes

MAX_UPLOAD_BYTES = 8 * 1024 * 1024  # 8 MiB: any photo of a part; larger files are refused before decoding
MAX_PIXELS = 4096 * 4096
KEPT_UPLOADS = 32  # uploads kept (oldest dropped first): as converted images, a few KB each
EXAMPLES = (6, 2)  # test anomalies and normal test images offered for picking
SHOWN_SIDE = 160  # images are sent enlarged to at least this many pixels (nearest: pixels stay sharp)
log = logging.getLogger(__name__)


def data_uri(image: Tensor) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(image, SHOWN_SIDE)).decode("ascii")


class UploadTooLarge(AnomalensError):
    """An upload above ``MAX_UPLOAD_BYTES``."""

    def __init__(self, name: str, size: int | None = None):
        got = f"is {size / 2**20:.1f} MiB" if size is not None else "is larger than the limit"
        super().__init__(f"{name} {got}, above the upload limit of {MAX_UPLOAD_BYTES // 2**20} MiB. Fix: downscale "
                         "or crop the image (the detector sees small images anyway)")


class WhatIf:
    """The state of the explorer: the runs (switchable detectors) and the uploaded images."""

    def __init__(self, runs: Sequence[RunExplainers]):
        if not runs:
            raise ConfigError("no run folder given. Fix: anomalens serve RUN_DIR [RUN_DIR ...]")
        self.runs = list(runs)
        # ref -> (name, {run index: (converted image, note)}); the decoded original is not kept (it may be 48 MB)
        self._uploads: OrderedDict[str, tuple[str, dict[int, tuple[Tensor, str | None]]]] = OrderedDict()
        self._lock = threading.Lock()  # one computation at a time: the models are shared and CPU-bound
        self._notes: dict[int, dict[str, str]] = {}

    def prepare(self) -> None:
        """Build each run's test data and threshold now rather than on the first click; what fails is
        logged and shown on the page (uploads still work)."""
        for i, run in enumerate(self.runs):
            notes = self._notes.setdefault(i, {})
            for what, step in (("examples", run.data), ("threshold", run.threshold)):
                try:
                    step()
                except AnomalensError as e:
                    notes[what] = str(e)
                    log.warning(f"{run.run_dir}: {what}: {e}")

    # ------------------------------------------------------------------------------------ lookups

    def run(self, index: int) -> RunExplainers:
        if not 0 <= index < len(self.runs):
            raise ConfigError(f"there is no run {index}: {len(self.runs)} run folders are served. Fix: pick a "
                              "detector from the list")
        return self.runs[index]

    def info(self) -> dict[str, Any]:
        runs = []
        for i, run in enumerate(self.runs):
            entry: dict[str, Any] = {"index": i, "name": run.name, "run_dir": str(run.run_dir),
                                     "image_shape": list(run.image_shape), "decomposable": run.decomposable,
                                     "concepts": run.counterfactual.config.concepts if run.counterfactual else 0,
                                     "missing": dict(run.missing), "notes": dict(self._notes.get(i, {}))}
            try:
                threshold = run.threshold()
                entry.update(threshold=threshold.value, threshold_rule=threshold.rule)
            except AnomalensError as e:
                entry.update(threshold=None, threshold_rule=str(e))
            runs.append(entry)
        return {"runs": runs, "alphas": list(ALPHAS), "limits": {"bytes": MAX_UPLOAD_BYTES, "pixels": MAX_PIXELS}}

    def examples(self, index: int) -> dict[str, Any]:
        run = self.run(index)
        try:
            data = run.data()
        except AnomalensError as e:
            return {"examples": [], "message": f"no test images to pick: {e}. Upload an image instead"}
        picks = []
        for label, count in zip((1, 0), EXAMPLES):
            picks += [(int(i), label) for i in (data.test_y == label).nonzero().flatten()[:count]]
        return {"examples": [{"ref": f"test:{i}", "label": "anomaly" if label else "normal",
                              "png": data_uri(data.test_x[i])} for i, label in picks], "message": None}

    def upload(self, data: bytes, name: str, index: int = 0) -> dict[str, Any]:
        """Keep an uploaded image, converted for every run's detector, under a fresh reference. It must fit
        the detector of run ``index`` (the one on screen), so that a bad upload never replaces a good image."""
        if len(data) > MAX_UPLOAD_BYTES:
            raise UploadTooLarge(name, len(data))
        image = decode_image_bytes(data, name, MAX_PIXELS)
        shapes = {i: run.image_shape for i, run in enumerate(self.runs)}
        converted = {}
        for i in (index, *[i for i in shapes if i != index]):  # the run on screen first: its error is the one shown
            try:
                converted[i] = conform(image, shapes[i], name)
            except AnomalensError:
                if i == index:
                    raise
        ref = "upload:" + secrets.token_hex(8)
        with self._lock:
            self._uploads[ref] = (name, converted)
            while len(self._uploads) > KEPT_UPLOADS:
                self._uploads.popitem(last=False)
        return {"ref": ref, "name": name, "size": [int(image.shape[1]), int(image.shape[0])]}

    def image(self, index: int, ref: str) -> tuple[Tensor, str | None]:
        """(1, C, H, W) input for run ``index`` and a note on its conversion."""
        run = self.run(index)
        if ref.startswith("test:") and ref[5:].isdigit():
            data = run.data()
            i = int(ref[5:])
            if i >= len(data.test_x):
                raise ConfigError(f"test image {i} does not exist in this run. Fix: pick one of the shown images")
            return data.test_x[i:i + 1], None
        if ref not in self._uploads:
            raise ConfigError("this upload is no longer kept (the server restarted or newer uploads replaced it). "
                              "Fix: upload the image again")
        name, converted = self._uploads[ref]
        if index not in converted:
            raise ConfigError(f"{name} cannot be converted for the detector of {run.name}: its shape differs too "
                              f"much from {run.image_shape[2]}x{run.image_shape[1]}. Fix: upload a cropped image")
        tensor, note = converted[index]
        return tensor[None], note

    # ------------------------------------------------------------------------------ computations

    def analyze(self, index: int, ref: str, alpha: float = 0.0) -> dict[str, Any]:
        """Score, verdict, heatmap and counterfactuals of one image."""
        run = self.run(index)
        x, note = self.image(index, ref)
        with self._lock:
            started = time.perf_counter()
            raw, bounded = float(run.detector.scores(x)[0]), float(run.detector.scores(x, raw=False)[0])
            heat = run.heatmap(x)
            answer: dict[str, Any] = {
                "ref": ref, "note": note, "input": data_uri(x[0]), "score": bounded, "raw_score": raw,
                "heatmap": data_uri(overlay(x, heat.maps)[0]), "heatmap_method": heat.method}
            try:
                threshold = run.threshold()
                answer.update(verdict=threshold.verdict(raw), threshold=threshold.value,
                              threshold_rule=threshold.rule)
            except AnomalensError as e:
                answer.update(verdict=None, threshold=None, threshold_rule=str(e))
            answer.update(self._counterfactuals(run, x, alpha))
            answer["seconds"] = time.perf_counter() - started
        return answer

    def counterfactuals(self, index: int, ref: str, alpha: float) -> dict[str, Any]:
        """The slider's answer: the K counterfactuals at target score ``alpha``, with their scores."""
        run = self.run(index)
        x, _ = self.image(index, ref)
        with self._lock:
            started = time.perf_counter()
            answer = self._counterfactuals(run, x, alpha)
            answer["seconds"] = time.perf_counter() - started
        return answer

    def _counterfactuals(self, run: RunExplainers, x: Tensor, alpha: float) -> dict[str, Any]:
        if alpha not in ALPHAS:
            raise ConfigError(f"alpha must be one of {', '.join(map(str, ALPHAS))}, got {alpha}. Fix: use the slider")
        if run.counterfactual is None:
            return {"alpha": alpha, "counterfactuals": [], "counterfactual_message": run.missing["counterfactual"]}
        cf = run.counterfactual.explain(x, alpha=alpha)
        images = cf.outputs[0]
        raw = run.detector.scores(images)
        checks = _properties(run, x.expand(len(images), -1, -1, -1), images)
        return {"alpha": alpha, "counterfactual_message": None, "counterfactuals": [
            {"concept": k + 1, "png": data_uri(images[k]), "score": float(cf.score_after[0, k]),
             "raw_score": float(raw[k]), "checks": _checks(checks, k)} for k in range(len(images))]}

    def repair(self, index: int, ref: str) -> dict[str, Any]:
        """AR-Pro's guided repair of one image, its repaired region omega and its properties."""
        run = self.run(index)
        x, _ = self.image(index, ref)
        if run.repair is None:
            return {"repair": None, "repair_message": run.missing["repair"]}
        with self._lock:
            started = time.perf_counter()
            result = run.repair.explain(x)
            fixed = result.outputs[:, 0]
            checks = _properties(run, x, fixed)
            seconds = time.perf_counter() - started
        return {"repair_message": None, "seconds": seconds, "repair": {
            "png": data_uri(fixed[0]), "omega": data_uri(result.extras["omega"][:1].float()),
            "score": float(result.score_after[0, 0]), "raw_score": float(run.detector.scores(fixed)[0]),
            "checks": _checks(checks, 0)}}


def _properties(run: RunExplainers, x: Tensor, explanations: Tensor) -> dict[str, Tensor] | None:
    """AR-Pro's checks, or None (not decomposable, or no training images to fit the thresholds on)."""
    try:
        return run.properties(x, explanations)
    except AnomalensError as e:
        log.warning(f"{run.run_dir}: no property checks: {e}")
        return None


def _checks(properties: dict[str, Tensor] | None, i: int) -> dict[str, float | bool] | None:
    if properties is None:
        return None
    return {**{p: bool(properties[p][i]) for p in PROPERTIES}, **{m: float(properties[m][i]) for m in METRICS},
            "s_bad": float(properties["s_bad"][i])}


def float_param(value: str | None, name: str, default: float) -> float:
    """A number from the query string, or a message naming it."""
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a number. Fix: use the page's controls") from None

"""CLIP detectors (OE paper sec. 3.3, app. G.2) on conftest's tiny random CLIP: eq. (4), preprocessing,
BCE-CL training and resume, persistence, loading errors, the train job, and the explainers on top."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from anomalens.data.addata import ADData
from anomalens.data.scenarios import normal_class_names
from anomalens.detectors import registry
from anomalens.detectors.base import Detector
from anomalens.detectors.clip import ANOMALOUS_PROMPT, PAPER_MODEL, CLIPDetector, prompt_texts
from anomalens.detectors.training import TrainConfig
from anomalens.errors import ConfigError
from anomalens.explain import registry as explainers
from anomalens.metrics.detection import auroc

from conftest import bars_task


def _clip(tiny_clip, name: str = "clip", classes=("7",), shape=(1, 28, 28)) -> CLIPDetector:
    return registry.create(name, shape, trunk_weights=str(tiny_clip), class_names=list(classes)).eval()


def test_score_is_eq4_bounded_and_differentiable_through_the_preprocessing(tiny_clip) -> None:
    detector = _clip(tiny_clip)
    assert detector.prompts == ["a photo of a seven", ANOMALOUS_PROMPT]
    x = torch.rand(3, 1, 28, 28, requires_grad=True)  # gray, 28 px: repeated to RGB and resized to 32 in torch
    score = detector.score(x)
    assert score.shape == (3,) and bool(((score >= 0) & (score <= 1)).all())
    (grad,) = torch.autograd.grad(score.sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    with torch.no_grad():  # eq. (4) written out: softmax over 100 * cosine similarities, the last prompt's share
        pixels = detector.pixels(x)
        u = detector.clip.get_image_features(pixel_values=pixels)
        u = getattr(u, "pooler_output", u)
        v = detector.clip.get_text_features(input_ids=torch.tensor(detector.prompt_ids),
                                            attention_mask=torch.tensor(detector.prompt_mask))
        v = getattr(v, "pooler_output", v)
        cos = torch.nn.functional.cosine_similarity(u[:, None], v[None], dim=-1)
        expected = (100 * cos).softmax(1)[:, -1]
    assert pixels.shape == (3, 3, 32, 32)
    torch.testing.assert_close(score.detach(), expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(detector.raw_score(x).sigmoid(), score)


def test_multi_class_normals_get_one_prompt_each_and_the_anomalous_prompt_last(tiny_clip) -> None:
    detector = _clip(tiny_clip, classes=("airplane", "Bird", "3"))
    assert detector.prompts == prompt_texts(["airplane", "Bird", "3"]) == [
        "a photo of a airplane", "a photo of a bird", "a photo of a three", "a photo of something"]
    logits = detector.logits(torch.rand(2, 1, 28, 28))
    assert logits.shape == (2, 4)
    torch.testing.assert_close(detector.score(torch.zeros(2, 1, 28, 28)),
                               detector.logits(torch.zeros(2, 1, 28, 28)).softmax(1)[:, -1])


def test_class_names_come_from_the_scenario_rule(tiny_mnist) -> None:
    root = tiny_mnist.parent
    assert normal_class_names("mnist", "7", root) == ("7",)
    assert normal_class_names("mnist", ["1", "3"], root) == ("1", "3")
    assert normal_class_names("mnist", "one or three", root) == ("1", "3")
    assert normal_class_names("mnist", "red or one", root) == ()  # a colour names no class
    assert normal_class_names("mnist", "0,1,2,3,4,5,6,8,9", root)[-1] == "9"  # leave-one-class-out
    assert normal_class_names("mvtec_ad/bottle", "good") == ("bottle",)


def test_preprocessing_matches_clips_pil_image_processor(tiny_clip) -> None:
    import transformers

    processor_class = getattr(transformers, "CLIPImageProcessorPil", None)
    if processor_class is None:  # transformers 4: CLIPImageProcessor is the PIL/numpy one
        processor_class = transformers.CLIPImageProcessor
    from PIL import Image

    detector = _clip(tiny_clip, shape=(3, 40, 56))
    processor = processor_class(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    std = torch.tensor(processor.image_std).view(1, 3, 1, 1)
    for shape in ((40, 56, 3), (56, 40, 3), (28, 28, 3)):  # down (short side first, then crop) and up
        image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
        ours = detector.pixels(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255)
        theirs = processor(images=Image.fromarray(image), return_tensors="pt")["pixel_values"]
        assert ours.shape == theirs.shape == (1, 3, 32, 32)
        # in [0, 1] units: PIL resamples uint8 noise in two clipped, rounded passes; the float bicubic agrees
        # to a third of a grey level on average (measured 0.0014) and within 0.06 everywhere
        diff = (ours - theirs).abs() * std
        assert diff.mean() < 0.004 and diff.max() < 0.1, shape


def _stripes_task(n: int = 64) -> ADData:
    """Normal = horizontal stripes, OE = vertical ones, random phase and noise: the tiny random CLIP ranks
    them only a little better than chance before training (measured AuROC 0.81), perfectly after."""
    g = torch.Generator().manual_seed(0)

    def stripes(vertical: bool) -> torch.Tensor:
        phase = torch.randint(0, 6, (n + 8, 1, 1, 1), generator=g)
        index = torch.arange(28).view(1, 1, 1, 28) if vertical else torch.arange(28).view(1, 1, 28, 1)
        return ((index + phase) // 3 % 2).float().expand(n + 8, 1, 28, 28) * 0.6 + \
            torch.rand(n + 8, 1, 28, 28, generator=g) * 0.4

    normal, oe = stripes(False), stripes(True)
    return ADData(train_normal=normal[:n], train_oe=oe[:n], test_x=torch.cat([normal[n:], oe[n:]]),
                  test_y=torch.tensor([0] * 8 + [1] * 8), name="stripes")


def test_bce_cl_lowers_its_loss_separates_normal_from_oe_and_resumes_exactly(tiny_clip, tmp_path) -> None:
    data = _stripes_task()
    cfg = dict(lr=1e-3, batch_size=16, progress=False, weight_decay=0.0)
    before = _clip(tiny_clip, "bce_cl", ("stripe",))
    text = {k: v.clone() for k, v in before.clip.text_model.state_dict().items()}
    start = auroc(data.test_y, before.scores(data.test_x))
    trained = _clip(tiny_clip, "bce_cl", ("stripe",))
    trained.fit(data, TrainConfig(epochs=3, checkpoint_dir=str(tmp_path / "a"), **cfg))
    losses = [h["loss"] for h in trained.history]
    assert len(losses) == 3 and losses[-1] < 0.1 * losses[0]
    assert auroc(data.test_y, trained.scores(data.test_x)) > max(0.95, start)
    assert all(torch.equal(v, trained.clip.text_model.state_dict()[k]) for k, v in text.items())  # text frozen
    assert torch.equal(trained.prompt_features, before.prompt_features)

    # interrupted after 1 epoch, then rerun with the full budget: the same detector as the straight run
    _clip(tiny_clip, "bce_cl", ("stripe",)).fit(data, TrainConfig(epochs=1, checkpoint_dir=str(tmp_path / "b"), **cfg))
    resumed = _clip(tiny_clip, "bce_cl", ("stripe",))
    resumed.fit(data, TrainConfig(epochs=3, checkpoint_dir=str(tmp_path / "b"), **cfg))
    assert all(torch.equal(v, resumed.state_dict()[k]) for k, v in trained.state_dict().items())

    data.train_oe = None
    with pytest.raises(ConfigError, match="Outlier Exposure.*Fix"):
        _clip(tiny_clip, "bce_cl").fit(data, TrainConfig(epochs=1, **cfg))


def test_zero_shot_fit_changes_nothing(tiny_clip) -> None:
    detector = _clip(tiny_clip)
    state = {k: v.clone() for k, v in detector.state_dict().items()}
    assert detector.fit(bars_task(8), TrainConfig(epochs=1, progress=False)) is detector and detector.history == []
    assert all(torch.equal(v, detector.state_dict()[k]) for k, v in state.items())


def test_saved_detector_reloads_bit_exactly_without_the_original_folder(tiny_clip, tmp_path) -> None:
    folder = shutil.copytree(tiny_clip, tmp_path / "copy")
    detector = _clip(folder, "bce_cl", ("bar", "dot"))
    with torch.no_grad():
        detector.clip.visual_projection.weight.mul_(1.5)  # as if fine-tuned: not what the folder holds
    path = detector.save(tmp_path / "clip.safetensors")
    shutil.rmtree(folder)
    loaded = Detector.load(path, expect="bce_cl")
    assert isinstance(loaded, CLIPDetector) and loaded.name == "bce_cl"
    assert loaded.prompts == detector.prompts and loaded.prompt_ids == detector.prompt_ids
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in detector.state_dict().items())
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(loaded.scores(x), detector.scores(x))
    assert torch.equal(loaded.scores(x, raw=False), detector.scores(x, raw=False))


def test_a_hub_id_offline_names_the_files_to_fetch(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ConfigError) as error:
        registry.create("clip", (3, 32, 32), class_names=["cat"])  # default: the paper's hub id
    message = str(error.value)
    assert "\n" not in message and PAPER_MODEL in message and "HF_HUB_OFFLINE" in message
    assert all(f in message for f in ("config.json", "model.safetensors", "vocab.json", "merges.txt", "Fix:"))
    with pytest.raises(ConfigError, match="no such folder"):
        registry.create("clip", (3, 32, 32), trunk_weights=str(tmp_path / "missing" / "clip"), class_names=["cat"])


def test_pickled_weights_are_refused_and_class_names_are_required(tiny_clip, tmp_path) -> None:
    folder = shutil.copytree(tiny_clip, tmp_path / "pickled")
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"not to be unpickled")
    with pytest.raises(ConfigError, match="pickled pytorch_model.bin weights are refused"):
        registry.create("clip", (3, 32, 32), trunk_weights=str(folder), class_names=["cat"])
    with pytest.raises(ConfigError, match="names of the normal classes.*Fix"):
        registry.create("bce_cl", (3, 32, 32), trunk_weights=str(tiny_clip))


def test_train_job_runs_zero_shot_clip_end_to_end(tiny_clip, tiny_mnist, tmp_path) -> None:
    from anomalens.experiments.training_run import TrainJob, run_training

    job = TrainJob(dataset="mnist", normal="7", detector="clip", trunk_weights=str(tiny_clip),
                   data_root=str(tiny_mnist.parent), device="cpu")
    metrics = run_training(job, tmp_path / "run", progress=False)
    assert 0 <= metrics["ad_auroc"] <= 1 and metrics["history"] == []
    loaded = Detector.load(tmp_path / "run" / "detector.safetensors", expect="clip")
    assert loaded.prompts == ["a photo of a seven", ANOMALOUS_PROMPT]
    with pytest.raises(ConfigError, match="names of the normal classes"):
        run_training(TrainJob(dataset="mnist", normal="red or 7", colored=True, detector="clip",
                              trunk_weights=str(tiny_clip), data_root=str(tiny_mnist.parent)), tmp_path / "rule")
    assert not (tmp_path / "rule").exists()  # refused before the run folder exists


def test_counterfactual_and_heatmap_explainers_work_through_clip(tiny_clip) -> None:
    data = bars_task(16)
    detector = _clip(tiny_clip, "bce_cl", ("bar",))
    x = data.test_x[8:11]
    tiny = {"profile": "tiny", "steps": 2, "warmup_steps": 1, "batch_size": 4, "sample_every": 0, "progress": False}
    result = explainers.create("counterfactual", **tiny).fit(detector, data).explain(x)
    assert result.outputs.shape[0] == 3 and result.outputs.shape[2:] == x.shape[1:]
    assert result.score_after.shape == result.outputs.shape[:2]
    assert bool(((result.score_after >= 0) & (result.score_after <= 1)).all())
    for method in ("heatmap", "gradient_x_input"):
        maps = explainers.create(method).fit(detector, data).explain(x).maps
        assert maps.shape == (3, 28, 28) and torch.isfinite(maps).all() and maps.abs().sum() > 0

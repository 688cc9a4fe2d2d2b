"""Scenario builders: turn labelled datasets into anomaly-detection tasks (``ADData``).

A scenario says which samples are normal (a set of classes, or a rule over class and colour such
as ``"red or one"``); everything else in the test split is an anomaly. Optional training extras:
an Outlier-Exposure pool drawn from a *different* dataset (checked for overlap with the test
anomalies), and a few "known anomalies" for supervised training (e.g. only the blue ones).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from anomalens.data import catalog
from anomalens.data.addata import ADData
from anomalens.data.images import DefectImages, LabeledImages, to_tensor
from anomalens.data.synthetic import GLYPH_COLOURS, colourise
from anomalens.errors import ScenarioError

COLOUR_NAMES = list(GLYPH_COLOURS)
_NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

NormalRule = Callable[[LabeledImages], np.ndarray]


# ------------------------------------------------------------------------------------ normality


def _class_index(token: str, class_names: Sequence[str]) -> int:
    """A class given by name, index or number word ('one' -> the class named '1')."""
    lowered = [c.lower() for c in class_names]
    token = token.strip().lower()
    token = re.sub(r"^(digit|class|letter)\s+", "", token)
    if token in _NUMBER_WORDS and str(_NUMBER_WORDS.index(token)) in lowered:
        token = str(_NUMBER_WORDS.index(token))
    if token in lowered:
        return lowered.index(token)
    if token.isdigit() and int(token) < len(class_names):
        return int(token)
    raise ScenarioError(f"{token!r} is neither a class of this dataset ({', '.join(class_names[:12])}"
                        f"{' ...' if len(class_names) > 12 else ''}) nor a colour ({', '.join(COLOUR_NAMES)})")


def parse_normality(rule: str | int | Sequence[int | str], class_names: Sequence[str]) -> NormalRule:
    """A function images -> boolean mask of the normal ones.

    ``rule`` is a class (``7``, ``"seven"``, ``"airplane"``), a list of classes, or a string of
    terms joined by ``or`` / ``+`` / ``,``, each term atoms joined by ``and``; an atom is a colour
    (red, yellow, green, cyan, blue, pink, gray) or a class. ``"red or digit one"`` makes red
    digits and ones of any colour normal; ``"blue and 3"`` only blue threes.
    """
    if isinstance(rule, (int, np.integer)):
        rule = [int(rule)]
    if not isinstance(rule, str):
        classes = [_class_index(str(r), class_names) for r in rule]
        if not classes:
            raise ScenarioError("the list of normal classes is empty")
        return lambda d: np.isin(d.labels, classes)

    def atom(token: str) -> Callable[[LabeledImages], np.ndarray]:
        token = token.strip().lower()
        if token in COLOUR_NAMES:
            index = COLOUR_NAMES.index(token)

            def is_colour(d: LabeledImages) -> np.ndarray:
                if "colour" not in d.attrs:
                    raise ScenarioError(f"the rule names the colour {token!r} but {d.name or 'the data'} "
                                        "is not coloured; use colored=True (CLI --colored)")
                return d.attrs["colour"] == index
            return is_colour
        cls = _class_index(token, class_names)
        return lambda d: d.labels == cls

    terms = [t for t in re.split(r"\s+or\s+|\+|,", rule.strip()) if t.strip()]
    if not terms:
        raise ScenarioError(f"empty normality rule {rule!r}; example: 'red or one'")
    conjunctions = [[atom(a) for a in re.split(r"\s+and\s+", t.strip())] for t in terms]

    def mask(d: LabeledImages) -> np.ndarray:
        out = np.zeros(len(d), bool)
        for atoms in conjunctions:
            term = np.ones(len(d), bool)
            for a in atoms:
                term &= a(d)
            out |= term
        return out
    return mask


def describe_rule(rule: str | int | Sequence[int | str], class_names: Sequence[str]) -> str:
    if isinstance(rule, str):
        return rule
    rule = [rule] if isinstance(rule, (int, np.integer)) else rule
    return "classes " + ", ".join(class_names[_class_index(str(r), class_names)] for r in rule)


def normal_class_names(dataset: str, normal: str | int | Sequence[int | str],
                       data_root: str | Path | None = None) -> tuple[str, ...]:
    """The names of a scenario's normal classes, for detectors whose prompts name them (CLIP): the classes
    of a class list or of an ``or`` of classes, a defect dataset's category (``mvtec_ad/bottle`` ->
    ``bottle``); () for a rule with colours or ``and``, which names no set of classes."""
    spec = catalog.get_spec(dataset)
    if spec.kind == "defects":
        return (dataset.rstrip("/").split("/")[-1],)
    if spec.kind != "classes":
        return ()
    if isinstance(normal, (int, np.integer)):
        normal = [int(normal)]
    if isinstance(normal, str):
        normal = [t.strip() for t in re.split(r"\s+or\s+|\+|,", normal.strip()) if t.strip()]
        if any(re.search(r"\sand\s", t.lower()) or t.lower() in COLOUR_NAMES for t in normal):
            return ()
    class_names = catalog.load(dataset, "train", data_root).class_names
    return tuple(class_names[_class_index(str(r), class_names)] for r in normal)


# ------------------------------------------------------------------------------ coloured variant


def colored_variant(data: LabeledImages, seed: int = 0, all_colours: bool = False) -> LabeledImages:
    """The coloured version of a grayscale set, with the seven colours of the counterfactual paper.

    ``all_colours=False`` gives each image one colour drawn with ``seed``; ``True`` makes a copy in
    every colour (7x the data, as in the paper's Colored-MNIST). The colour index is kept in
    ``attrs['colour']`` (index into ``COLOUR_NAMES``).
    """
    if data.images.shape[-1] != 1:
        raise ScenarioError(f"{data.name}: colouring needs grayscale images, these have "
                            f"{data.images.shape[-1]} channels")
    if all_colours:
        n, k = len(data), len(COLOUR_NAMES)
        index = np.tile(np.arange(n), k)
        colours = np.repeat(np.arange(k), n)
    else:
        index = np.arange(len(data))
        colours = np.random.default_rng(seed).integers(0, len(COLOUR_NAMES), len(data))
    attrs = {key: value[index] for key, value in data.attrs.items()}
    attrs["colour"] = colours
    return LabeledImages(colourise(data.images[index], colours), data.labels[index], data.class_names,
                         f"colored_{data.name}", attrs)


# ----------------------------------------------------------------------------------- conversion


def match_format(images: np.ndarray, shape: tuple[int, int, int]) -> torch.Tensor:
    """uint8 NHWC images -> float NCHW tensor of ``shape`` (C, H, W).

    The documented conversions: RGB -> gray by ITU-R 601 luma (as Pillow's 'L'), gray -> RGB by
    repeating the channel, and an antialiased bilinear resize. Used to fit an OE set to the data
    (grayscale CIFAR-10 as OE for Fashion-MNIST).
    """
    x = to_tensor(images)
    c, h, w = shape
    if x.shape[1] == 3 and c == 1:
        x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    elif x.shape[1] == 1 and c == 3:
        x = x.expand(-1, 3, -1, -1).contiguous()
    if tuple(x.shape[2:]) != (h, w):
        x = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False).clamp_(0, 1)
    return x


#: Near-duplicate tolerance: root-mean-square pixel difference, on the 0..1 scale, with both images
#: in the test images' format (channels and size: what the detector is trained on). 8/255 catches
#: copies shifted by a few grey levels, re-encoded or with mild noise, while distinct images of real
#: datasets stay well above it (see ``near_duplicates``).
NEAR_DUPLICATE_RMS = 8 / 255


def _flat(images: np.ndarray, shape: tuple[int, int, int], chunk: int = 4096) -> torch.Tensor:
    """(N, C*H*W) in ``shape``, converted in chunks so a 50k-image set never exists as full-size floats."""
    parts = [match_format(images[i:i + chunk], shape).flatten(1) for i in range(0, len(images), chunk)]
    return torch.cat(parts) if parts else torch.zeros(0, int(np.prod(shape)))


def near_duplicates(candidates: np.ndarray, reference: np.ndarray, tolerance: float = NEAR_DUPLICATE_RMS,
                    chunk: int = 2048) -> np.ndarray:
    """Indices of ``candidates`` that nearly duplicate some ``reference`` image (uint8 NHWC arrays).

    Two steps keep it fast (60,000 x 10,000 MNIST-sized images in about 3 s on 2 cores): the nearest
    reference of every candidate on 8x8 thumbnails (a chunked ``x @ y.T``), then the RMS difference to
    that neighbour at the reference's channels and size, compared with ``tolerance``. An average of
    differences is no larger than their RMS, so the thumbnail step does not lose pairs.
    """
    if len(candidates) == 0 or len(reference) == 0:
        return np.zeros(0, np.int64)
    shape = (reference.shape[3], *reference.shape[1:3])
    a, b = _flat(candidates, (shape[0], 8, 8)), _flat(reference, (shape[0], 8, 8))
    b_sq = (b * b).sum(1)
    nearest, distance = [], []
    for x in a.split(chunk):  # squared distances, one (chunk, len(reference)) block at a time
        d2, index = ((x * x).sum(1, keepdim=True) + b_sq - 2 * x @ b.T).min(1)
        nearest.append(index)
        distance.append(d2.clamp_min(0).div(a.shape[1]).sqrt())
    nearest, distance = torch.cat(nearest), torch.cat(distance)
    close = torch.nonzero(distance < tolerance + 1e-3).flatten()  # float slack for the x @ y.T form
    if len(close) == 0:
        return np.zeros(0, np.int64)
    rms = (_flat(candidates[close.numpy()], shape) - _flat(reference[nearest[close].numpy()], shape)
           ).pow(2).mean(1).sqrt()
    return close[rms < tolerance].numpy()


# ------------------------------------------------------------------------------------ scenarios


def _attrs_tensors(data: LabeledImages) -> dict[str, torch.Tensor]:
    attrs = {"label": torch.from_numpy(data.labels.copy())}
    for key, value in data.attrs.items():
        if np.issubdtype(value.dtype, np.number) or value.dtype == bool:
            attrs[key] = torch.from_numpy(np.asarray(value).copy())
    return attrs


def scenario(train: LabeledImages, test: LabeledImages, normal: str | int | Sequence[int | str],
             name: str | None = None) -> ADData:
    """Normal = samples matching ``normal`` (see ``parse_normality``); every other test sample is an
    anomaly. Training uses only the normal training samples."""
    rule = parse_normality(normal, train.class_names)
    train_mask, test_mask = rule(train), rule(test)
    description = describe_rule(normal, train.class_names)
    if not train_mask.any():
        raise ScenarioError(f"{train.name}: no training sample is normal under {description!r}")
    if train_mask.all() or test_mask.all():
        raise ScenarioError(f"{train.name}: every sample is normal under {description!r}: no anomalies left")
    if not test_mask.any():
        raise ScenarioError(f"{test.name}: no test sample is normal under {description!r}")
    return ADData(
        train_normal=to_tensor(train.images[train_mask]),
        test_x=to_tensor(test.images),
        test_y=torch.from_numpy((~test_mask).astype(np.int64)),
        test_attrs=_attrs_tensors(test),
        name=name or f"{train.name}: normal = {description}",
        normal_description=description,
    )


def one_vs_rest(train: LabeledImages, test: LabeledImages, normal_class: int | str) -> ADData:
    """One class is normal, all others are anomalies (the standard benchmark)."""
    return scenario(train, test, [normal_class])


def leave_one_class_out(train: LabeledImages, test: LabeledImages, anomalous_class: int | str) -> ADData:
    """All classes but one are normal; the left-out class is the anomaly."""
    left_out = _class_index(str(anomalous_class), train.class_names)
    normal = [i for i in range(len(train.class_names)) if i != left_out]
    data = scenario(train, test, normal)
    data.name = f"{train.name}: anomaly = {train.class_names[left_out]}"
    data.normal_description = f"all classes but {train.class_names[left_out]}"
    return data


def oe_indices(pool_size: int, size: int | None, seed: int) -> np.ndarray:
    """Indices of an OE pool: the first ``size`` of a seeded permutation, so pools are nested
    (the pool of size 2 contains the pool of size 1 for the same seed), without replacement."""
    if size is None:
        return np.arange(pool_size)
    if size < 1:
        raise ScenarioError(f"oe_size must be >= 1 (or None for the whole set), got {size}")
    if size > pool_size:
        raise ScenarioError(f"oe_size {size} exceeds the {pool_size} available outlier images; "
                            f"use at most {pool_size}")
    return np.random.default_rng(seed).permutation(pool_size)[:size]


def check_disjoint(oe: LabeledImages, test: LabeledImages, anomalies: np.ndarray) -> None:
    """Refuse an OE set that shares images with the test anomalies: training on them would leak
    the test set and inflate every metric.

    Shared means near-duplicate, not only byte-identical: an OE image whose RMS difference to a
    test anomaly, in the test format, is below ``NEAR_DUPLICATE_RMS`` (8/255) counts, so adding 1 to
    every pixel or re-encoding the images does not get them past the check.
    """
    if oe.name and oe.name == test.name:
        raise ScenarioError(f"OE set {oe.name!r} is the test dataset itself: its images include the test "
                            "anomalies. Choose another dataset (e.g. kmnist for mnist, tinyimagenet for cifar10)")
    shared = near_duplicates(oe.images, test.images[anomalies])
    if len(shared):
        first = ", ".join(str(i) for i in shared[:10]) + (" ..." if len(shared) > 10 else "")
        raise ScenarioError(
            f"OE set {oe.name!r} shares {len(shared)} images with the test anomalies of {test.name!r} "
            f"(near-duplicates: RMS pixel difference below {NEAR_DUPLICATE_RMS * 255:.0f}/255; OE indices "
            f"{first}). Fix: choose a disjoint OE dataset or remove these images from it")


def with_outlier_exposure(data: ADData, oe: LabeledImages | Sequence[LabeledImages], test: LabeledImages,
                          size: int | None = None, seed: int = 0) -> ADData:
    """Add an OE pool of ``size`` images (all when None) drawn from ``oe`` (one set, or several whose
    union is sampled), fitted to the data's format."""
    sources = [oe] if isinstance(oe, LabeledImages) else list(oe)
    anomalies = data.test_y.numpy().astype(bool)
    for source in sources:
        check_disjoint(source, test, anomalies)
    offsets = np.cumsum([0] + [len(s) for s in sources])
    index = np.sort(oe_indices(int(offsets[-1]), size, seed))
    parts = [match_format(s.images[index[(index >= lo) & (index < hi)] - lo], data.image_shape)
             for s, lo, hi in zip(sources, offsets[:-1], offsets[1:])]
    data.train_oe = torch.cat(parts)
    return data


def with_known_anomalies(data: ADData, train: LabeledImages, normal: str | int | Sequence[int | str],
                         known: str | int | Sequence[int | str], size: int | None = None,
                         seed: int = 0) -> ADData:
    """Add labelled training anomalies: training samples that are anomalous under ``normal`` and
    match ``known`` (e.g. ``"blue"``), optionally a seeded subset of ``size``."""
    is_normal = parse_normality(normal, train.class_names)(train)
    is_known = parse_normality(known, train.class_names)(train)
    candidates = np.flatnonzero(~is_normal & is_known)
    if len(candidates) == 0:
        raise ScenarioError(f"no training anomaly matches {known!r} (normal = {normal!r})")
    chosen = candidates[np.sort(oe_indices(len(candidates), size, seed))]
    data.train_anomalies = to_tensor(train.images[chosen])
    return data


def with_generated_oe(data: ADData, kind: str, size: int | None = None, seed: int = 0) -> ADData:
    """Synthetic anomalies made from the normal training images: ``confetti`` (FCDD) pastes random
    colour blocks on them."""
    if kind != "confetti":
        raise ScenarioError(f"unknown generated OE {kind!r} for {data.name!r}; use 'confetti'")
    from anomalens.data.defects import confetti_noise

    data.train_oe = confetti_noise(data.train_normal if len(data.train_normal) else data.train_anomalies,
                                   size, seed)
    return data


def _drop_cifar10_overlap(oe: LabeledImages, dataset: str) -> LabeledImages:
    """Tiny-ImageNet as OE for CIFAR-10 must not contain CIFAR-10's classes (or close relatives)."""
    if dataset == "cifar10" and "cifar10_overlap" in oe.attrs:
        return oe.subset((oe.attrs["cifar10_overlap"] < 0) & ~oe.attrs["cifar10_related"])
    return oe


def choose_oe_classes(pools: Sequence[LabeledImages], count: int | None, seed: int) -> list[LabeledImages]:
    """The OE pools cut down to ``count`` classes of their union (OE paper, appendix A: k classes drawn
    at random per seed), the first ``count`` of a seeded permutation, so the draw for k + 1 classes holds
    the draw for k; None keeps every class."""
    if count is None:
        return list(pools)
    classes = [(i, int(c)) for i, pool in enumerate(pools) for c in np.unique(pool.labels)]
    if count > len(classes):
        names = "+".join(p.name for p in pools)
        raise ScenarioError(f"oe_classes {count} exceeds the {len(classes)} classes of the OE set {names!r}; "
                            f"use at most {len(classes)}")
    chosen = [classes[j] for j in np.random.default_rng(seed).permutation(len(classes))[:count]]
    return [pool.subset(np.isin(pool.labels, [c for i, c in chosen if i == index]))
            for index, pool in enumerate(pools) if any(i == index for i, _ in chosen)]


def oe_sources(oe: str) -> list[tuple[str, str | None]]:
    """The (dataset, split) pairs of an OE spec: ``"kmnist+glyph_letters"`` is two sets, each from its
    default split; ``"tinyimagenet@train+tinyimagenet@test"`` names the splits, so that both splits of
    one set can serve as OE (more, more varied outliers). Raises ScenarioError on a malformed part."""
    sources = []
    for part in oe.split("+"):
        name, at, split = part.strip().partition("@")
        if not name or (at and split not in catalog.SPLITS):
            raise ScenarioError(f"OE {oe!r}: {part!r} is not NAME or NAME@SPLIT with SPLIT in "
                                f"{list(catalog.SPLITS)}. Fix: e.g. oe: tinyimagenet@train+tinyimagenet@test")
        sources.append((name, split or None))
    return sources


def build(dataset: str, normal: str | int | Sequence[int | str], *, colored: bool = False,
          oe: str | None = None, oe_size: int | None = None, oe_split: str | None = None,
          known_anomalies: str | int | Sequence[int | str] | None = None, known_size: int | None = None,
          seed: int = 0, data_root: str | Path | None = None, oe_classes: int | None = None) -> ADData:
    """A scenario from dataset names, the high-level entry point.

    ``build("mnist", 7, oe="kmnist", oe_size=1024)`` is MNIST one-vs-rest with 1,024 KMNIST
    outliers (``oe="kmnist+glyph_letters"`` draws from the union of two sets, ``oe="confetti"``
    pastes random colour blocks on normal training images);
    ``build("mnist", "red or one", colored=True, oe="emnist")`` is Colored-MNIST. ``oe_classes=k``
    draws the OE images from k seeded classes of the OE set (``choose_oe_classes``).
    The OE split defaults to ``train`` when present, else ``test`` (shared/data's KMNIST); ``oe_split``
    sets it for every OE set, ``oe="tinyimagenet@test"`` for one (``oe_sources``).
    """
    train, test = catalog.load(dataset, "train", data_root), catalog.load(dataset, "test", data_root)
    if colored:
        train, test = colored_variant(train, seed), colored_variant(test, seed + 1)
    data = scenario(train, test, normal)
    if known_anomalies is not None:
        data = with_known_anomalies(data, train, normal, known_anomalies, known_size, seed)
    if oe == "confetti":
        data = with_generated_oe(data, oe, oe_size, seed)
    elif oe is not None:
        pools = []
        for name, named_split in oe_sources(oe):  # "kmnist+glyph_letters": the union of several OE sets
            split = named_split or oe_split or (
                "train" if "train" in catalog.available_splits(name, data_root) else "test")
            pool = _drop_cifar10_overlap(catalog.load(name, split, data_root), catalog.get_spec(dataset).name)
            if colored and pool.images.shape[-1] == 1:
                pool = colored_variant(pool, seed + 2)
            pools.append(pool)
        data = with_outlier_exposure(data, choose_oe_classes(pools, oe_classes, seed), test, oe_size, seed)
    data.name = f"{'colored ' if colored else ''}{data.name}" + (f", OE = {oe}" if oe else "")
    return data


# -------------------------------------------------------------------------------- defect datasets


def defect_scenario(defects: DefectImages, per_type: int = 3, seed: int = 0, anomalies_only: bool = False,
                    size: int | None = None) -> ADData:
    """A semi-supervised inspection task from a defect dataset (AE-XAD paper, sec. 5.1).

    ``per_type`` defective test images of every defect type move, with their masks, into the
    training set as labelled anomalies; the rest is the test set (with masks). ``anomalies_only``
    is the paper's D* scenario: no normal training images at all. ``size`` resizes images
    (bilinear) and masks (nearest) to size x size.
    """
    rng = np.random.default_rng(seed)
    types = np.asarray(defects.test_defect_type).astype(str)
    chosen = []
    for kind in sorted(set(types) - {"good"}):
        candidates = np.flatnonzero((types == kind) & (defects.test_masks.reshape(len(types), -1).any(1)))
        if len(candidates) <= per_type:
            raise ScenarioError(f"{defects.name}: defect type {kind!r} has {len(candidates)} annotated images, "
                                f"need more than per_type={per_type} to keep some for testing")
        chosen += rng.choice(candidates, per_type, replace=False).tolist()
    train_index = np.sort(np.asarray(chosen, int))
    test_index = np.setdiff1d(np.arange(len(types)), train_index)

    def images(x: np.ndarray) -> torch.Tensor:
        t = to_tensor(x)
        return t if size is None else F.interpolate(t, size=(size, size), mode="bilinear", antialias=True,
                                                    align_corners=False).clamp_(0, 1)

    def masks(m: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(m)).float()
        return t if size is None else F.interpolate(t[:, None], size=(size, size), mode="nearest")[:, 0]

    normal = images(defects.train)
    kinds = sorted(set(types))
    return ADData(
        train_normal=normal[:0] if anomalies_only else normal,
        train_anomalies=images(defects.test[train_index]),
        train_anomaly_masks=masks(defects.test_masks[train_index]),
        test_x=images(defects.test[test_index]),
        test_y=torch.from_numpy(defects.test_labels[test_index].astype(np.int64)),
        test_masks=masks(defects.test_masks[test_index]),
        test_attrs={"defect_type": torch.tensor([kinds.index(t) for t in types[test_index]])},
        name=f"{defects.name}{'*' if anomalies_only else ''}: {per_type} labelled anomalies per defect type",
        normal_description="defect-free",
    )

"""CLIP detectors of the OE paper (section 3.3, appendix G.2): zero-shot ``clip`` and fine-tuned ``bce_cl``.

Prompts: "a photo of a {c}" for every normal class c, then "a photo of something". The anomaly score is
eq. (4) (eq. (5) of appendix I.3 for K normal classes): the softmax, at logit scale 100, of the cosine
similarities between the image's CLIP embedding and the prompts' embeddings, read at the last prompt:

    s(x) = exp(100 <u, v_K+1>) / sum_k exp(100 <u, v_k>) = sigmoid(l_K+1 - logsumexp(l_1..l_K)),

so ``raw_score`` is that log-odds (same ranking as s, no saturation at 1.0 in float32) and ``score`` its
sigmoid, s itself: bounded in [0, 1] and differentiable with respect to the pixels.

Images arrive as the library's tensors (B, C, H, W) in [0, 1]; the CLIP preprocessing happens inside the
differentiable forward, so explainers back-propagate through it: gray is repeated to 3 channels, the
short side is resized to the model's image size (bicubic, antialiased, clipped to [0, 1] as PIL's uint8
output is), the centre is cropped, and CLIP's mean and std are applied.

``bce_cl`` fine-tunes the image tower (vision transformer and visual projection) with Outlier Exposure:
binary cross-entropy on s, i.e. s is minimised on normal images and maximised on OE images, with SGD and
Nesterov momentum as in appendix G.2. The text tower stays frozen; the prompts' normalised embeddings are
a buffer (``prompt_features``) computed once from it. (The official code's leave-one-class-out loss
takes the best normal prompt's log-probability for normal images; eq. (5)'s binary cross-entropy, used
here, sums over the normal prompts.)

Weights: ``trunk_weights`` (CLI ``--trunk-weights``) is a local folder written by ``save_pretrained``
or a hub id, ``openai/clip-vit-base-patch32`` (the paper's ViT-B/32) by default. Only safetensors
weights are read, never pickles. A saved detector is one safetensors file holding the whole CLIP, the
prompt embeddings, and in its header the CLIPConfig, the prompt texts and their token ids: it reloads
offline, without the original folder. See docs/clip.md.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import Tensor

from anomalens.checkpoints import checkpoints
from anomalens.data.addata import ADData
from anomalens.data.augment import Augment
from anomalens.detectors.base import Detector
from anomalens.detectors.registry import register
from anomalens.detectors.training import TrainConfig, run_epochs
from anomalens.device import autocast, prepare_cpu, resolve_device
from anomalens.errors import ConfigError

log = logging.getLogger(__name__)

CLIP_DETECTORS = ("clip", "bce_cl")
PAPER_MODEL = "openai/clip-vit-base-patch32"  # ViT-B/32, the paper's CLIP
MODEL_FILES = ("config.json", "model.safetensors", "vocab.json", "merges.txt", "tokenizer_config.json",
               "special_tokens_map.json")
NORMAL_PROMPT = "a photo of a {}"
ANOMALOUS_PROMPT = "a photo of something"
LOGIT_SCALE = 100.0
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OPENAI_CLIP_MEAN / STD of CLIP's image processor
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# Appendix G.2: SGD with Nesterov momentum, 80 epochs, x0.1 at 50, 60, 70 and 75; lr 2e-5 on CIFAR-10,
# CUB, DTD, (Fashion-)MNIST and 1e-4 on ImageNet and MVTec-AD. ``fit(data)`` without a config uses these.
PAPER_EPOCHS, PAPER_MILESTONES, PAPER_LR, PAPER_MOMENTUM = 80, (50, 60, 70, 75), 2e-5, 0.9
_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# A header may not ask for more than this (checked before anything is built: a CLIPConfig with 10^9
# layers would otherwise spend hours creating modules, even on the meta device).
_LIMITS = {"num_hidden_layers": 256, "hidden_size": 16_384, "intermediate_size": 65_536,
           "num_attention_heads": 1_024, "vocab_size": 4_000_000, "max_position_embeddings": 65_536,
           "image_size": 8_192, "patch_size": 8_192, "num_channels": 4, "projection_dim": 16_384}


def prompt_name(class_name: str) -> str:
    """The class as the prompt says it: lower case, digits as words (MNIST's "7" -> "seven")."""
    name = str(class_name).strip()
    return _NUMBER_WORDS[int(name)] if name.isdigit() and int(name) < 10 else name.lower()


def prompt_texts(class_names: list[str] | tuple[str, ...]) -> list[str]:
    """One prompt per normal class, then the anomalous prompt (always last)."""
    return [NORMAL_PROMPT.format(prompt_name(c)) for c in class_names] + [ANOMALOUS_PROMPT]


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300].rstrip(".")


def _offline() -> bool:
    """HF_HUB_OFFLINE is set, or the hub's host does not resolve (no network: the hub client would
    otherwise retry for over a minute before failing)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    from huggingface_hub import constants

    try:
        socket.getaddrinfo(urlparse(constants.ENDPOINT).hostname or "huggingface.co", 443)
    except OSError:
        return True
    return False


def load_pretrained(source: str | Path) -> tuple[Any, Any]:
    """(CLIPModel in float32, CLIPTokenizer) from a local folder or a hub id; only safetensors weights.

    Fails with one ``ConfigError`` line naming the files to fetch and where to put them."""
    from transformers import CLIPModel, CLIPTokenizer
    from transformers.utils import logging as hf_logging

    source = str(source)
    files = ", ".join(MODEL_FILES)
    folder = Path(source).expanduser()
    if folder.is_dir():
        where = f"{folder}: "
        fix = (f"put {files} of the hub repository {PAPER_MODEL} (or another CLIP's) in this folder; pickled "
               "pytorch_model.bin weights are refused, use model.safetensors")
    elif source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise ConfigError(f"{source}: no such folder, and not a hub id (owner/name). Fix: pass a folder holding "
                          f"{files} (from https://huggingface.co/{PAPER_MODEL}), or a hub id when online")
    else:
        where = ""  # set below, once we know whether the hub was reachable
        fix = (f"download {files} from https://huggingface.co/{source} into a folder (e.g. `hf download "
               f"{source} {' '.join(MODEL_FILES)} --local-dir models/{source.split('/')[-1]}`) and pass "
               "that folder (--trunk-weights FOLDER, trunk_weights=FOLDER), or run once online")
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a bar per load of a few seconds is noise in the run's log
    name = str(folder) if folder.is_dir() else source

    def load(local_only: bool) -> tuple[Any, Any]:
        return (CLIPModel.from_pretrained(name, use_safetensors=True, local_files_only=local_only),
                CLIPTokenizer.from_pretrained(name, local_files_only=local_only))

    try:
        try:  # a folder, or a hub id already in the cache: no network
            model, tokenizer = load(True)
        except (OSError, ValueError) as e:
            if folder.is_dir():
                raise e
            offline = _offline()
            where = f"cannot load CLIP {source!r}: not in the Hugging Face cache, and " + (
                "the hub is unreachable (offline, or HF_HUB_OFFLINE is set): " if offline else "from the hub: ")
            if offline:
                raise e
            model, tokenizer = load(False)
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise ConfigError(f"{where}{_one_line(e)}. Fix: {fix}") from e
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return model.float().eval(), tokenizer


def checked_config(clip_config: dict[str, Any]) -> Any:
    """A ``CLIPConfig`` from its JSON dict, refusing sizes no CLIP has (``ValueError``) before building."""
    from transformers import CLIPConfig

    if not isinstance(clip_config, dict):
        raise ValueError(f"clip_config must be a mapping, got {type(clip_config).__name__}")
    config = CLIPConfig.from_dict(clip_config)
    for part, sub in (("", config), ("text_config.", config.text_config), ("vision_config.", config.vision_config)):
        for key, limit in _LIMITS.items():
            value = getattr(sub, key, None)
            if value is not None and not (isinstance(value, int) and 1 <= value <= limit):
                raise ValueError(f"clip_config {part}{key} = {value!r} lies outside [1, {limit}]")
    vision = config.vision_config
    if vision.patch_size > vision.image_size or vision.hidden_size % vision.num_attention_heads:
        raise ValueError("clip_config vision_config: patch larger than the image, or width not a multiple of heads")
    return config


@register(*CLIP_DETECTORS)
class CLIPDetector(Detector):
    """``CLIPDetector.pretrained("clip", (3, 32, 32), ["airplane"])``: eq. (4) on the paper's ViT-B/32
    (from the hub cache, or pass ``source=FOLDER``); ``"bce_cl"`` for the OE fine-tuned variant.

    The constructor takes what a saved file's header holds (``config()``); ``model`` is a ready
    ``CLIPModel`` (pretrained), else one is built from ``clip_config`` with random weights, and
    ``encode_prompts()`` must then fill ``prompt_features`` (``load`` fills it from the file)."""

    reads_class_names = True  # training_run passes the scenario's normal class names as ``class_names``

    def __init__(self, name: str, image_shape: tuple[int, int, int], clip_config: dict[str, Any],
                 prompts: list[str], prompt_ids: list[list[int]], prompt_mask: list[list[int]],
                 class_names: list[str] | None = None, source: str | None = None, logit_scale: float = LOGIT_SCALE,
                 model: Any = None):
        super().__init__()
        from transformers import CLIPModel

        if name not in CLIP_DETECTORS:
            raise ValueError(f"CLIPDetector serves {CLIP_DETECTORS}, not {name!r}")
        if len(image_shape) != 3 or image_shape[0] not in (1, 3) or min(image_shape) < 1:
            raise ValueError(f"CLIP takes gray or RGB images (1 or 3, H, W), got {tuple(image_shape)}")
        rows = len(prompts)
        if rows < 2 or len(prompt_ids) != rows or len(prompt_mask) != rows or \
                len({len(r) for r in [*prompt_ids, *prompt_mask]}) != 1:
            raise ValueError(f"need >= 2 prompts with token ids and masks of one length each, got {rows} prompts")
        if not 0 < logit_scale <= 1e4:
            raise ValueError(f"logit_scale must lie in (0, 1e4], got {logit_scale}")
        self.name = name
        self.image_shape = tuple(int(s) for s in image_shape)
        self.prompts, self.class_names = list(prompts), list(class_names or [])
        self.prompt_ids = [[int(t) for t in row] for row in prompt_ids]
        self.prompt_mask = [[int(t) for t in row] for row in prompt_mask]
        self.source, self.logit_scale = source, float(logit_scale)
        self.clip = model if model is not None else CLIPModel(checked_config(clip_config))
        self.image_size = int(self.clip.config.vision_config.image_size)
        for frozen in (self.clip.text_model, self.clip.text_projection):
            frozen.requires_grad_(False)
        self.clip.logit_scale.requires_grad_(False)  # eq. (4) uses the fixed scale 100
        self.register_buffer("prompt_features", torch.zeros(rows, int(self.clip.config.projection_dim)))
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)
        self.history: list[dict[str, float]] = []

    # ---------------------------------------------------------------------------------- building

    @classmethod
    def pretrained(cls, name: str, image_shape: tuple[int, int, int], class_names: list[str] | tuple[str, ...],
                   source: str | Path = PAPER_MODEL) -> CLIPDetector:
        """CLIP weights and tokenizer from ``source`` (folder or hub id), prompts for ``class_names``."""
        names = [str(c) for c in (class_names or [])]
        if not names or not all(n.strip() for n in names):
            raise ConfigError(f"{name} needs the names of the normal classes for its prompts ('{NORMAL_PROMPT}'), "
                              f"got {list(class_names or [])}. Fix: pass class_names=[...] (Python), or choose the "
                              "normal classes by name or number (--normal 3, --normal 1,3) on a dataset with class "
                              "names; rules with colours or 'and' name no classes")
        model, tokenizer = load_pretrained(source)
        prompts = prompt_texts(names)
        tokens = tokenizer(prompts, padding=True)
        positions = int(model.config.text_config.max_position_embeddings)
        if len(tokens["input_ids"][0]) > positions:
            raise ConfigError(f"the prompts need {len(tokens['input_ids'][0])} tokens, the CLIP text model of "
                              f"{source} takes {positions}. Fix: shorter class names")
        detector = cls(name, image_shape, model.config.to_dict(), prompts, tokens["input_ids"],
                       tokens["attention_mask"], names, str(source), model=model)
        detector.encode_prompts()
        return detector.eval()

    @torch.no_grad()
    def encode_prompts(self) -> None:
        """Fill ``prompt_features`` with the text tower's normalised embeddings of the prompts."""
        device = self.prompt_features.device
        ids, mask = torch.tensor(self.prompt_ids, device=device), torch.tensor(self.prompt_mask, device=device)
        text = self.clip.text_model
        was_training = text.training
        text.eval()
        pooled = text(input_ids=ids, attention_mask=mask).pooler_output
        text.train(was_training)
        self.prompt_features.copy_(F.normalize(self.clip.text_projection(pooled).float(), dim=-1))

    # ----------------------------------------------------------------------------------- scoring

    def pixels(self, x: Tensor) -> Tensor:
        """CLIP's preprocessing as differentiable tensor operations: (B, 1 or 3, H, W) in [0, 1] ->
        normalised (B, 3, S, S), S the model's image size."""
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"CLIP takes images (B, 1 or 3, H, W), got shape {tuple(x.shape)}")
        x = x.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        size = self.image_size
        h, w = x.shape[-2:]
        if (h, w) != (size, size):  # sizes and offsets as CLIP's image processor computes them
            th, tw = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
            x = F.interpolate(x, size=(th, tw), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
            top, left = (th - size) // 2, (tw - size) // 2
            x = x[..., top:top + size, left:left + size]
        return (x - self.mean) / self.std

    def image_features(self, x: Tensor) -> Tensor:
        """Normalised image embeddings u = f_u(x) (B, projection_dim)."""
        pooled = self.clip.vision_model(pixel_values=self.pixels(x)).pooler_output
        return F.normalize(self.clip.visual_projection(pooled).float(), dim=-1)

    def logits(self, x: Tensor) -> Tensor:
        """100 <u, v_k> for every prompt k (B, K + 1); the anomalous prompt is the last column."""
        return self.logit_scale * self.image_features(x) @ self.prompt_features.float().T

    def forward(self, x: Tensor) -> Tensor:
        """The log-odds of eq. (4): anomalous prompt against all normal prompts (B,)."""
        logits = self.logits(x)
        return logits[:, -1] - torch.logsumexp(logits[:, :-1], dim=1)

    def raw_score(self, x: Tensor) -> Tensor:
        return self(x)

    def score(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self(x))

    def score_log_odds(self, x: Tensor) -> Tensor:
        return self(x)

    # ---------------------------------------------------------------------------------- training

    def fit(self, data: ADData, cfg: TrainConfig | None = None) -> CLIPDetector:
        """``clip``: nothing to learn (zero-shot). ``bce_cl``: fine-tune the image tower with OE (balanced
        batches, BCE on eq. (4), SGD + Nesterov, the config's schedule; appendix G.2 when ``cfg`` is None)."""
        if data.image_shape[0] not in (1, 3):
            raise ValueError(f"CLIP takes gray or RGB images, {data.name!r} has {data.image_shape[0]} channels")
        if self.name == "clip":
            self.to(resolve_device(cfg.device if cfg else "auto"))
            self.history = []
            log.info("clip is zero-shot: nothing to train (eq. 4 with the prompts %s)", self.prompts)
            return self.eval()
        cfg = cfg or TrainConfig(epochs=PAPER_EPOCHS, lr=PAPER_LR, milestones=PAPER_MILESTONES)
        if cfg.lr > 1e-4:
            log.warning(f"bce_cl: lr {cfg.lr:g} is {cfg.lr / PAPER_LR:.0f}x the paper's {PAPER_LR:g} for fine-tuning "
                        f"CLIP (appendix G.2); for its recipe pass --lr {PAPER_LR:g} --epochs {PAPER_EPOCHS} "
                        f"--milestones {','.join(map(str, PAPER_MILESTONES))}")
        sources = [s for s in (data.train_oe, data.train_anomalies) if s is not None and len(s)]
        if not sources:
            raise ConfigError(f"bce_cl trains on Outlier Exposure, but the scenario {data.name!r} has no OE images "
                              "or labelled anomalies. Fix: pass oe=... (CLI --oe), or use the zero-shot clip detector")
        anomalies = torch.cat(sources) if len(sources) > 1 else sources[0]
        normal = data.train_normal
        prepare_cpu()
        device = resolve_device(cfg.device)
        self.to(device)
        generator = torch.Generator().manual_seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        augment = Augment.preset(cfg.augment)
        tower = [*self.clip.vision_model.parameters(), *self.clip.visual_projection.parameters()]
        optimizer = torch.optim.SGD(tower, lr=cfg.lr, momentum=PAPER_MOMENTUM, nesterov=True,
                                    weight_decay=cfg.weight_decay)
        batch = min(cfg.batch_size, len(normal))
        steps = max(1, len(normal) // batch)
        if cfg.max_steps_per_epoch:
            steps = min(steps, cfg.max_steps_per_epoch)
        y = torch.cat([torch.zeros(batch), torch.ones(batch)]).to(device)

        def step_loss(order: Tensor, step: int) -> Tensor:
            x = torch.cat([normal[order[step * batch:(step + 1) * batch]],
                           anomalies[torch.randint(len(anomalies), (batch,), generator=generator)]])
            x = augment(x, generator).to(device)
            with autocast(device, cfg.bf16):
                logit = self(x)
            return F.binary_cross_entropy_with_logits(logit.float(), y)

        folder = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
        run_epochs(self, optimizer, cfg, len(normal), steps, step_loss, generator, folder,
                   resume=folder is not None and bool(checkpoints(folder)))
        return self

    # ------------------------------------------------------------------------------- persistence

    def config(self) -> dict[str, Any]:
        return {"detector": self.name, "image_shape": list(self.image_shape), "clip_config": self.clip.config.to_dict(),
                "prompts": self.prompts, "prompt_ids": self.prompt_ids, "prompt_mask": self.prompt_mask,
                "class_names": self.class_names, "source": self.source, "logit_scale": self.logit_scale}

    @classmethod
    def create(cls, name: str, image_shape: tuple[int, int, int], trunk_weights: str | None = None,
               class_names: list[str] | tuple[str, ...] | None = None, **options: Any) -> CLIPDetector:
        return cls.pretrained(name, image_shape, class_names or [], trunk_weights or PAPER_MODEL)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CLIPDetector:
        return cls(config["detector"], tuple(config["image_shape"]), config["clip_config"], config["prompts"],
                   config["prompt_ids"], config["prompt_mask"], config.get("class_names"), config.get("source"),
                   float(config.get("logit_scale", LOGIT_SCALE)))

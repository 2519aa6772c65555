"""Recipes: YAML in, a typed and validated ``Recipe`` out.

Every problem is reported at once, each naming its field path (``stages[1].resolution``) and the
bad value, so a user fixes a recipe in one pass instead of one crash at a time.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from fgvc.errors import EnsembleError, UsageError
from fgvc.models.config import ModelConfig
from fgvc.recipes.formats import FORMATS
from fgvc.recipes.limits import MAX_DEPTH
from fgvc.recipes.presets import apply_presets, check_adapt_method, check_frechet_reference
from fgvc.recipes.schema import SchemaError, build, describe, nesting_depth, read_yaml, to_plain
from fgvc.recipes.training import (
    EmaConfig,
    LossConfig,
    MixupConfig,
    SamplerConfig,
    check_training_options,
)
from fgvc.suggest import did_you_mean

ADAPT_GROUPS = ("classifier", "last_bn", "last_norm", "last_stage", "pos_embed", "head_dropout")
STAGE_ORDER = ("train", "adapt")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_MODULE_PATH_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")


@dataclass
class OptimizerConfig:
    """SGD (the paper's choice) or AdamW; weight decay skips biases and norm parameters."""

    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    layer_decay: float | None = None  # timm's layer-wise lr decay: block i of L gets decay**(L-i)
    decay_all: bool = False  # weight decay on biases and norm parameters too (authors' release)

    def check(self) -> list[tuple[str, str]]:
        out = []
        if self.lr <= 0:
            out.append(("lr", f"must be > 0, got {self.lr!r}"))
        if not 0 <= self.momentum < 1:
            out.append(("momentum", f"must be in [0, 1), got {self.momentum!r}"))
        if self.weight_decay < 0:
            out.append(("weight_decay", f"must be >= 0, got {self.weight_decay!r}"))
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            out.append(("betas", f"must be two numbers in [0, 1), got {self.betas!r}"))
        return out


@dataclass
class ScheduleConfig:
    """Learning-rate schedule per iteration: linear warm-up, then step or cosine decay."""

    name: Literal["cosine", "step", "constant"] = "cosine"
    warmup_epochs: float = 0.0
    every: int = 30
    gamma: float = 0.1
    min_lr: float = 0.0

    def check(self) -> list[tuple[str, str]]:
        out = []
        if self.warmup_epochs < 0:
            out.append(("warmup_epochs", f"must be >= 0, got {self.warmup_epochs!r}"))
        if self.every <= 0:
            out.append(("every", f"must be a positive number of epochs, got {self.every!r}"))
        if not 0 < self.gamma <= 1:
            out.append(("gamma", f"must be in (0, 1], got {self.gamma!r}"))
        if self.min_lr < 0:
            out.append(("min_lr", f"must be >= 0, got {self.min_lr!r}"))
        return out


@dataclass
class AlbumentationsConfig:
    """An albumentations pipeline on a stage's training images (uint8 HWC, before
    normalisation), in albumentations' own serialised form; needs ``fgvc[albumentations]``."""

    # Inline: what `A.to_dict(pipeline)` returns; or a path (relative to the working directory)
    # to a file written by `A.save(pipeline, path)` (JSON, or YAML by its .yaml/.yml suffix).
    pipeline: dict[str, Any] | str
    # `after_crop`: on fgvc's train DA (or an adapt stage's test DA) output, at the stage's
    # resolution; `before_crop`: on the decoded image, fgvc's crop following.
    position: Literal["after_crop", "before_crop"] = "after_crop"


@dataclass
class StageConfig:
    """One stage: ``train`` (whole network, train DA) or ``adapt`` (FixRes, test DA)."""

    name: Literal["train", "adapt"]
    resolution: int
    epochs: int = 1
    batch_size: int = 32
    trainable: str | list[str | dict[str, int]] | None = None
    augment: Literal["train", "test", "test2", "train_resize_crop"] | None = None
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    label_smoothing: float = 0.0
    crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    bn_momentum: float | None = 0.1
    grad_clip: float | None = None
    auto_augment: str | None = None
    random_erasing: float = 0.0
    albumentations: AlbumentationsConfig | None = None
    accumulate: int = 1
    ema: EmaConfig | None = None
    mixup: MixupConfig | None = None
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    # Adapt stages with test DA run the frozen part once and train on its cached activations
    # up to this size (engine/feature_cache.py); 0 turns the cache off.
    adapt_cache_gb: float = 4.0
    validate_every: int = 1  # epochs between per-epoch validations (the last epoch always)
    # Adaptation method and data (fgvc.engine.adapt_methods; presets in fgvc.recipes.presets).
    method: Literal["finetune", "bn_stats", "frechet", "gaussian"] = "finetune"
    data_split: str | None = None
    reestimate: list[str] = field(default_factory=list)
    reference_resolution: int | None = None
    preset: Literal["official"] | None = None

    def __post_init__(self) -> None:
        if self.trainable is None:
            self.trainable = "all" if self.name == "train" else ["classifier", "last_bn"]
        if isinstance(self.trainable, str) and self.trainable != "all":
            self.trainable = [self.trainable]
        if self.augment is None:
            self.augment = "train" if self.name == "train" else "test"

    def check(self) -> list[tuple[str, str]]:
        out = []
        if self.resolution <= 0:
            out.append(("resolution", f"must be a positive number of pixels, got {self.resolution!r}"))
        if self.epochs < 0:
            out.append(("epochs", f"must be >= 0, got {self.epochs!r}"))
        if self.batch_size <= 0:
            out.append(("batch_size", f"must be > 0, got {self.batch_size!r}"))
        if not 0 <= self.label_smoothing < 1:
            out.append(("label_smoothing", f"must be in [0, 1), got {self.label_smoothing!r}"))
        if len(self.crop_scale) != 2 or not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            out.append(("crop_scale", f"must be [min, max] with 0 < min <= max <= 1, got "
                        f"{self.crop_scale!r}"))
        if self.bn_momentum is not None and not 0 < self.bn_momentum <= 1:
            out.append(("bn_momentum", f"must be in (0, 1] or null, got {self.bn_momentum!r}"))
        if self.validate_every < 1:
            out.append(("validate_every", f"must be >= 1 epoch, got {self.validate_every!r}"))
        if self.grad_clip is not None and self.grad_clip <= 0:
            out.append(("grad_clip", f"must be > 0 or null, got {self.grad_clip!r}"))
        if not self.adapt_cache_gb >= 0:
            out.append(("adapt_cache_gb", f"must be >= 0 (GB; 0 = no cache), got "
                        f"{self.adapt_cache_gb!r}"))
        if (self.albumentations is not None and self.name == "adapt" and self.augment == "test"
                and self.adapt_cache_gb > 0):
            out.append(("adapt_cache_gb", "an albumentations pipeline makes each epoch's images "
                        "differ, but the adapt cache runs the frozen part once on un-augmented "
                        "images: set adapt_cache_gb: 0"))
        if self.name == "adapt" and self.trainable == "all":
            out.append(("trainable", "an adapt stage fine-tunes part of the network: list groups "
                        f"({', '.join(ADAPT_GROUPS)}) or module paths, not 'all'"))
        if isinstance(self.trainable, list):
            if not self.trainable:
                out.append(("trainable", "must name at least one group or module path"))
            for i, item in enumerate(self.trainable):
                if isinstance(item, dict):
                    out += [(f"trainable[{i}]", m) for m in check_block_count(item)]
                elif item not in ADAPT_GROUPS and not _MODULE_PATH_RE.match(item):
                    out.append((f"trainable[{i}]", f"{item!r} is neither a group "
                                f"({', '.join(ADAPT_GROUPS)}, last_blocks: N) nor a module path "
                                "like 'layer4.2.bn3'"))
        return out + check_training_options(self) + check_adapt_method(self)


def check_block_count(item: dict) -> list[str]:
    """``{last_blocks: N}``, the one mapping a trainable list accepts."""
    if set(item) != {"last_blocks"}:
        return [f"a mapping item must be {{last_blocks: N}}, got keys {sorted(item)}"]
    count = item["last_blocks"]
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        return [f"last_blocks must be a positive integer, got {count!r}"]
    return []


@dataclass
class DatasetConfig:
    """Which adapter reads the data, where, and how bad images are treated.

    ``holdout`` > 0 moves that fraction of ``train_split`` (stratified, seeded) into a split
    named ``holdout``, for validating on datasets that ship only train and test.

    ``test_decode: reduced`` trades test DA's exactness for speed on large JPEGs (libjpeg-turbo's
    scaled inverse DCT is another low-pass filter than the reference's resize;
    ``benchmarks/eval_decode.py`` measures both); the default, ``exact``, is the paper's test DA.
    """

    name: str
    root: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    train_split: str = "train"
    val_split: str = "val"
    holdout: float = 0.0
    num_workers: int = 2
    on_bad_image: Literal["skip", "fail"] = "skip"
    # fgvc/datasets/integrity.py (what `warn` downgrades) and fgvc/datasets/decode.py
    integrity: Literal["strict", "warn"] = "strict"
    max_image_pixels: int | None = 89_478_485  # Pillow's default; null lifts the limit
    exif_transpose: bool = True
    # How test DA (evaluation, prediction, the adapt stage) decodes JPEGs. `exact`: the full
    # image, resized as the reference transform does (the paper's test DA). `reduced`: a JPEG
    # at least twice the resize size is decoded at libjpeg-turbo's reduced scale, faster on
    # large photos but other pixels (a mean of up to 26 grey levels off on fine textures), so
    # its accuracies are not the paper's test DA's; no shipped recipe uses it.
    test_decode: Literal["exact", "reduced"] = "exact"
    # Read images through symbolic links that lead out of the dataset root (refused by
    # default, as paths with '..' are; fgvc/datasets/integrity.py).
    follow_symlinks_outside: bool = False

    def __post_init__(self) -> None:
        if self.root is None:
            self.root = f"datasets/{self.name}"

    def check(self) -> list[tuple[str, str]]:
        from fgvc.datasets import registry

        out = []
        if self.name not in registry.names():
            out.append(("name", f"unknown dataset {self.name!r}"
                        f"{did_you_mean(self.name, registry.names())} "
                        f"(known: {', '.join(registry.names())})"))
        else:  # "dataset.options.x: message" -> ("options.x", "message")
            out += [tuple(p.removeprefix("dataset.").split(": ", 1))
                    for p in registry.get(self.name).option_problems(self.options)]
        if self.num_workers < 0:
            out.append(("num_workers", f"must be >= 0, got {self.num_workers!r}"))
        if not 0 <= self.holdout < 1:
            out.append(("holdout", f"must be in [0, 1), got {self.holdout!r}"))
        if self.max_image_pixels is not None and self.max_image_pixels < 1:
            out.append(("max_image_pixels", f"must be a positive pixel count or null (no limit), "
                        f"got {self.max_image_pixels!r}"))
        return out


CropModeName = Literal["center", "center_flip", "ten_crop"]
AverageName = Literal["probs", "logits"]
# How an ensemble averages its members: probabilities, log-probabilities (a geometric mean), or
# logits (the authors' competition code); fgvc/inference/ensemble.py.
CombineName = Literal["probs", "log_probs", "logits"]


@dataclass
class InferenceConfig:
    """Shared by evaluation and prediction: test resolutions, batch size, and test-time crops
    (``center``, ``center_flip`` or ``ten_crop``) with how they are combined (``average``)."""

    resolutions: list[int] | None = None
    batch_size: int = 64
    crops: CropModeName = "center"
    average: AverageName = "probs"

    def check(self) -> list[tuple[str, str]]:
        out = []
        for i, r in enumerate(self.resolutions or []):
            if r <= 0:
                out.append((f"resolutions[{i}]", f"must be a positive number of pixels, got {r!r}"))
        if self.batch_size <= 0:
            out.append(("batch_size", f"must be > 0, got {self.batch_size!r}"))
        return out


@dataclass
class EvaluateConfig(InferenceConfig):
    """Accuracy on a labelled split at each test resolution, before and after adaptation."""

    split: str = "val"


@dataclass
class PredictConfig(InferenceConfig):
    """Class probabilities for every image of a split, usually the unlabelled test split:
    crops combined at each of ``resolutions`` (default: the last stage's), then the
    resolutions averaged. ``keep_top_k``: store only each image's k best classes."""

    split: str = "test"
    keep_top_k: int | None = None

    def check(self) -> list[tuple[str, str]]:
        out = super().check()
        if self.keep_top_k is not None and self.keep_top_k <= 0:
            out.append(("keep_top_k", f"must be >= 1 (or null to keep every class), got "
                                      f"{self.keep_top_k!r}"))
        return out


@dataclass
class SubmissionConfig:
    """Where the submission CSV goes and in which competition's format; ``top_k`` overrides the
    number of category ids per row the format writes."""

    format: Literal["generic", "inaturalist2017", "inaturalist2018", "inaturalist2019",
                    "herbarium2019"] = "generic"
    path: str | None = None
    top_k: int | None = None

    def check(self) -> list[tuple[str, str]]:
        if self.top_k is not None and self.top_k <= 0:
            return [("top_k", f"must be >= 1, got {self.top_k!r}")]
        return []


def _check_kept_top_k(predict: PredictConfig | None, submission: SubmissionConfig | None
                      ) -> list[tuple[str, str]]:
    """A submission cannot list more classes per image than the predictions keep."""
    if predict is None or submission is None or not predict.keep_top_k or predict.keep_top_k < 1:
        return []
    want = submission.top_k or FORMATS[submission.format].top_k
    if want > predict.keep_top_k:
        return [("predict.keep_top_k", f"keeps {predict.keep_top_k} classes per image, but the "
                                       f"{submission.format} submission lists {want}")]
    return []


@dataclass
class TrackingConfig:
    """Experiment tracking (fgvc/tracking.py): TensorBoard event files in
    ``runs/<name>/tensorboard/`` unless ``tensorboard: false``; ``wandb: {project: ...}`` (any
    other ``wandb.init`` argument allowed) and ``mlflow: {tracking_uri, experiment}`` optional."""

    tensorboard: bool = True
    wandb: dict[str, Any] | None = None
    mlflow: dict[str, Any] | None = None

    def check(self) -> list[tuple[str, str]]:
        out = []
        if self.wandb is not None and not self.wandb.get("project"):
            out.append(("wandb.project", "required when tracking with wandb, e.g. "
                        "wandb: {project: fgvc}"))
        unknown = sorted(set(self.mlflow or {}) - {"tracking_uri", "experiment"})
        if unknown:
            out.append(("mlflow", f"unknown key(s) {', '.join(unknown)} (known: tracking_uri, "
                        "experiment)"))
        return out


@dataclass
class CheckpointConfig:
    """Checkpoints besides the one at the end of every epoch: ``every_minutes`` also writes one
    mid-epoch (with the data position and random states, so a resume is exact) on long epochs.
    ``keep``: which epoch's weights a stage ends with, ``last`` or ``best`` by ``metric`` on the
    validation split (kept beside the last; predictions and the next stage use it)."""

    every_minutes: float | None = None
    keep: Literal["last", "best"] = "last"
    metric: Literal["val_top1", "val_top5", "val_loss"] = "val_top1"

    def check(self) -> list[tuple[str, str]]:
        if self.every_minutes is not None and not self.every_minutes > 0:
            return [("every_minutes", f"must be > 0 or null, got {self.every_minutes!r}")]
        return []


class RunOutputs:
    """Where a recipe's outputs go: shared by run and ensemble recipes."""

    name: str
    output_root: str
    submission: SubmissionConfig | None

    @property
    def run_dir(self) -> Path:
        return Path(self.output_root) / self.name

    @property
    def submission_path(self) -> Path | None:
        if self.submission is None:
            return None
        return Path(self.submission.path or f"submissions/{self.name}.csv")

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    def check_name(self) -> list[tuple[str, str]]:
        if _NAME_RE.fullmatch(self.name):
            return []
        return [("name", f"must be letters, digits, '.', '_' or '-', got {self.name!r}")]


@dataclass
class Recipe(RunOutputs):
    """A whole run: data, model, the stages in order, and what to write out."""

    name: str
    dataset: DatasetConfig
    model: ModelConfig
    stages: list[StageConfig]
    kind: Literal["run"] = "run"
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # fgvc/engine/device.py
    output_root: str = "runs"
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    predict: PredictConfig | None = field(default_factory=PredictConfig)
    submission: SubmissionConfig | None = field(default_factory=SubmissionConfig)
    sweep_resolutions: list[int] | None = None
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    # Warnings of `fgvc validate` this recipe knowingly departs from (e.g. the paper's own
    # 707 px, off the 32 px grid): not printed again, and the plan says they were accepted.
    accepted_warnings: list[Literal["off_grid"]] = field(default_factory=list)

    def check(self) -> list[tuple[str, str]]:
        out = []
        train_stage = self.stage("train")
        if self.sweep_resolutions is not None:
            if self.stage("adapt") is None:
                out.append(("sweep_resolutions", "a resolution sweep needs an adapt stage"))
            low = train_stage.resolution if train_stage else 1
            bad = [r for r in self.sweep_resolutions if r < low]
            if not self.sweep_resolutions or bad:
                out.append(("sweep_resolutions", f"candidates must be >= the train resolution "
                            f"{low}, got {self.sweep_resolutions!r}"))
        out += self.check_name()
        if not self.stages:
            out.append(("stages", "must hold at least one stage (train, adapt or both)"))
        names = [s.name for s in self.stages if s is not None]
        if len(set(names)) != len(names):
            out.append(("stages", f"each stage may appear once, got {names!r}"))
        elif names != sorted(names, key=STAGE_ORDER.index):
            out.append(("stages", f"stages run train then adapt, got {names!r}"))
        train = self.stage("train")
        adapt = self.stage("adapt")
        if train and adapt and adapt.resolution < train.resolution:
            out.append((f"stages[{names.index('adapt')}].resolution",
                        f"the adapt stage tests at a higher resolution than training, got "
                        f"{adapt.resolution} < train resolution {train.resolution}"))
        if self.submission is not None and self.predict is None:
            out.append(("submission", "a submission needs predictions: set predict or drop submission"))
        out += _check_kept_top_k(self.predict, self.submission)
        return out + check_frechet_reference(self)

    def stage(self, name: str) -> StageConfig | None:
        """The stage called ``name`` (``train`` or ``adapt``), or None when the recipe has none."""
        if name not in STAGE_ORDER:
            raise UsageError(f"unknown stage {name!r}{did_you_mean(name, STAGE_ORDER)} (stages: "
                             f"{', '.join(STAGE_ORDER)})")
        return next((s for s in self.stages if s is not None and s.name == name), None)

    @property
    def final_resolution(self) -> int:
        return self.stages[-1].resolution

    @property
    def eval_resolutions(self) -> list[int]:
        """Configured resolutions, or else the resolution of every stage."""
        if self.evaluate.resolutions:
            return sorted(set(self.evaluate.resolutions))
        return sorted({s.resolution for s in self.stages})


@dataclass
class EnsembleMember:
    """A member: a recipe (run, or reused if its run is finished) or a saved predictions file."""

    recipe: str | None = None
    predictions: str | None = None
    weight: float = 1.0
    overrides: list[str] = field(default_factory=list)

    def check(self) -> list[tuple[str, str]]:
        out = []
        if (self.recipe is None) == (self.predictions is None):
            out.append(("recipe", "give exactly one of recipe or predictions"))
        if self.weight < 0:
            out.append(("weight", f"must be >= 0, got {self.weight!r}"))
        if self.predictions is not None and self.overrides:
            out.append(("overrides", "only a recipe member takes overrides"))
        return out


@dataclass
class EnsembleRecipe(RunOutputs):
    """``kind: ensemble``: combine the predictions of several runs into one submission.
    ``member_overrides`` apply to every member recipe, before the member's own ``overrides``."""

    name: str
    kind: Literal["ensemble"]
    members: list[EnsembleMember]
    combine: CombineName = "probs"
    output_root: str = "runs"
    member_overrides: list[str] = field(default_factory=list)
    submission: SubmissionConfig | None = field(default_factory=SubmissionConfig)

    def check(self) -> list[tuple[str, str]]:
        out = []
        out += self.check_name()
        if not self.members:
            out.append(("members", "an ensemble needs at least one member"))
        elif sum(m.weight for m in self.members if m is not None) <= 0:
            out.append(("members", "the weights must have a positive sum"))
        return out


def parse_recipe(data: Any, source: str | None = None) -> Recipe | EnsembleRecipe:
    """Validate plain data (as loaded from YAML) into a Recipe (or an EnsembleRecipe for
    ``kind: ensemble``), or raise SchemaError."""
    if nesting_depth(data) > MAX_DEPTH:
        raise SchemaError([f"nested more than {MAX_DEPTH} levels deep"], source)
    problems: list[str] = []
    checks: list[str] = []
    kind = data.get("kind", "run") if isinstance(data, dict) else "run"
    data = apply_presets(data)
    recipe = build(EnsembleRecipe if kind == "ensemble" else Recipe, data, "", problems, checks)
    if problems or checks:
        raise SchemaError(problems + checks, source)
    return recipe


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe | EnsembleRecipe:
    """Read a YAML recipe (a file, or a shipped name such as ``quickstart``), apply
    ``a.b.c=value`` overrides, validate."""
    from fgvc.recipes.library import resolve_recipe

    path = resolve_recipe(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise SchemaError([f"not UTF-8 text: {err}"], str(path)) from None
    data = read_yaml(text, str(path))
    data = apply_overrides(data, overrides or [], source=str(path))
    return parse_recipe(data, str(path))


def member_recipe_path(member: EnsembleMember, source: Path | None) -> Path:
    """Relative to the working directory, like every path in a recipe (see fgvc/recipes/plan.py)."""
    return Path(member.recipe)


def load_member(recipe: EnsembleRecipe, member: EnsembleMember, source: Path | None) -> Recipe:
    """An ensemble member's run recipe, with the ensemble's and the member's overrides."""
    member_recipe = load_recipe(member_recipe_path(member, source),
                                recipe.member_overrides + member.overrides)
    if not isinstance(member_recipe, Recipe):
        raise EnsembleError(f"member {member.recipe}: an ensemble's members are run recipes, "
                            "not ensembles")
    if member_recipe.predict is None:
        raise EnsembleError(f"member {member.recipe}: has no predict section, so no predictions")
    return member_recipe


def apply_overrides(data: Any, overrides: list[str], source: str | None = None) -> Any:
    """Return a copy of ``data`` with each ``a.b.c=value`` set; the value is read as YAML.

    List items are addressed by index (``stages.1.resolution``) or, for stages, by stage name
    (``stages.adapt.resolution``).
    """
    data = copy.deepcopy(data if data is not None else {})
    problems = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            problems.append(f"--set {item!r}: expected KEY=VALUE, e.g. stages.0.epochs=3")
            continue
        try:
            value = yaml.safe_load(raw)
        except (yaml.YAMLError, RecursionError):
            value = raw
        error = _set_path(data, key.split("."), value)
        if error:
            problems.append(f"--set {item!r}: {error}")
    if problems:
        raise SchemaError(problems, source)
    return data


def _set_path(node: Any, parts: list[str], value: Any) -> str | None:
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            index = _list_index(node, part)
            if index is None:
                names = [item.get("name") for item in node if isinstance(item, dict)]
                return (f"{where}: no item {part!r} in a list of {len(node)}"
                        f"{did_you_mean(part, [n for n in names if isinstance(n, str)])}")
            if last:
                node[index] = value
                return None
            node = node[index]
        elif isinstance(node, dict):
            if last:
                node[part] = value
                return None
            node = node.setdefault(part, {})
        else:
            return f"{where}: cannot set a field inside {describe(node)}"
    return None


def _list_index(items: list, part: str) -> int | None:
    if re.fullmatch(r"-?\d+", part):
        index = int(part)
        return index if -len(items) <= index < len(items) else None
    for i, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == part:
            return i
    return None

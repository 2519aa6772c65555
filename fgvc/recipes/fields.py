"""The recipe schema as data: every field with its path, type, default, bounds and meaning, and
the JSON Schema an editor uses to complete and check recipes (``fgvc schema``).

Both are read from the dataclasses that validate recipes (``fgvc/recipes/recipe.py`` and the
sections it nests), the per-field bounds of ``limits.py`` and each section's own ``check()``,
so a new field, choice or bound appears here, in the JSON Schema and on the documentation's
recipe reference page without anyone editing them. What a field does comes from
``DESCRIPTIONS`` below, else from the comment on the field in its dataclass. Light: no torch.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import io
import re
import tokenize
import types
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from fgvc.recipes.limits import bounds_for
from fgvc.recipes.schema import DEFAULT_INT_LIMIT

SCHEMA_FILE = "fgvc.schema.json"  # beside the shipped recipes; `fgvc schema --out` writes it
JSON_SCHEMA_DIALECT = "http://json-schema.org/draft-07/schema#"  # what yaml-language-server reads

# What each field does, for users: keyed by the class that declares the field (a subclass's
# inherited fields are found along its MRO). A field missing here falls back to its comment.
DESCRIPTIONS: dict[str, str] = {
    # the whole run
    "Recipe.name": "The run's name: its folder is `<output_root>/<name>` and its submission "
                   "`submissions/<name>.csv`.",
    "Recipe.dataset": "Which adapter reads the data, where, and how bad images are treated.",
    "Recipe.model": "The architecture, its weights and the data settings that override the "
                    "model's own.",
    "Recipe.stages": "The stages in order: `train`, `adapt` or both (train first).",
    "Recipe.kind": "`run` for a training recipe; `ensemble` makes it an ensemble recipe "
                   "(members, combine).",
    "Recipe.seed": "Seeds weights, shuffling and every augmentation draw, so a resumed run "
                   "sees the batches the uninterrupted one would have.",
    "Recipe.device": "`auto` takes CUDA when present, else the CPU.",
    "Recipe.precision": "`auto`: bf16 autocast on CUDA and on CPUs with native bf16 (AMX or "
                        "AVX512-BF16), fp32 elsewhere; `bf16` and `fp32` force one.",
    "Recipe.output_root": "Folder holding the run folders (relative to the working directory).",
    "Recipe.evaluate": "Accuracy on a labelled split at each test resolution, before and after "
                       "adaptation.",
    "Recipe.predict": "Class probabilities for every image of a split (usually the unlabelled "
                      "test split); `null` predicts nothing.",
    "Recipe.submission": "The competition CSV written from the predictions; `null` writes none.",
    "Recipe.sweep_resolutions": "Candidate test resolutions for `fgvc sweep` and `fgvc table3`: "
                                "the best after adaptation on the validation split is kept.",
    "Recipe.tracking": "Experiment tracking: TensorBoard by default, Weights & Biases and "
                       "MLflow on request.",
    "Recipe.checkpoint": "Timed mid-epoch checkpoints, and whether a stage ends with its last "
                         "or its best epoch.",
    "Recipe.accepted_warnings": "Warnings of `fgvc validate` this recipe knowingly departs "
                                "from: not printed again, and the plan says they were accepted.",
    # dataset
    "DatasetConfig.name": "The adapter: a name from `fgvc datasets list`.",
    "DatasetConfig.root": "The data's folder (relative to the working directory; default "
                          "`datasets/<name>`); the dataset card says which folder to give.",
    "DatasetConfig.options": "Adapter options (typed per adapter; see the datasets reference).",
    "DatasetConfig.train_split": "The split stage 1 trains on.",
    "DatasetConfig.val_split": "The split validated on after each epoch and used to choose "
                               "K_test; `holdout` for a slice of the training split.",
    "DatasetConfig.holdout": "Fraction of `train_split` moved (stratified, seeded) into a split "
                             "named `holdout`, for datasets without a validation split.",
    "DatasetConfig.num_workers": "DataLoader worker processes per process; 0 loads in the main "
                                 "process (best on 2 cores).",
    "DatasetConfig.on_bad_image": "`skip` an unreadable image with a warning (counted in "
                                  "metrics.jsonl), or `fail` naming the file.",
    "DatasetConfig.integrity": "`warn` accepts an image listed twice in a split with the same "
                               "label, or listed in two splits, with a warning; other metadata "
                               "errors always stop.",
    "DatasetConfig.max_image_pixels": "Larger images are treated as unreadable (decompression "
                                      "bombs); `null` lifts the limit.",
    "DatasetConfig.exif_transpose": "Apply the EXIF orientation tag, as photo viewers do.",
    # model
    "ModelConfig.arch": "Any timm name, `name.tag` for a pretrained tag, `hf-hub:org/repo`, "
                        "`pretrainedmodels:<name>`, or one of fgvc's own (`fgvc models list`).",
    "ModelConfig.pretrained": "`imagenet` downloads the architecture's default (or tagged) "
                              "weights through timm; `none` starts from random weights.",
    "ModelConfig.weights": "A weights file (state_dict, fgvc checkpoint or .safetensors); a "
                           "different class count replaces only the classifier.",
    "ModelConfig.drop_rate": "Dropout before the classifier.",
    "ModelConfig.mean": "Normalisation mean (R, G, B); default: the model's pretrained "
                        "configuration.",
    "ModelConfig.std": "Normalisation standard deviation (R, G, B); default: the model's.",
    "ModelConfig.interpolation": "Resize filter; default: the model's pretrained configuration "
                                 "(the paper's recipes set `bilinear`).",
    "ModelConfig.crop_pct": "Test DA's centre-crop ratio (crop side / resized side); default: "
                            "the pretrained tag's, else 224/256.",
    "ModelConfig.img_size": "The input size a transformer's position embedding is built for; "
                            "default: the model's own.",
    "ModelConfig.channels_last": "Channels-last memory format for images and weights (faster "
                                 "convolutions on GPUs and with oneDNN bf16).",
    "ModelConfig.compile": "`torch.compile` the training and evaluation forward; runs eagerly, "
                           "with one log line, where the platform cannot compile.",
    # stages
    "StageConfig.name": "`train` (whole network, train DA) or `adapt` (FixRes: adapted groups "
                        "only, test DA, at K_test).",
    "StageConfig.resolution": "The stage's input size in pixels: K_train for `train`, K_test "
                              "for `adapt`.",
    "StageConfig.epochs": "Passes over the stage's data.",
    "StageConfig.batch_size": "Images per step and per process.",
    "StageConfig.trainable": "`all`, or the adaptation groups and module paths to train: "
                             "`classifier`, `last_bn`/`last_norm`, `last_stage`, `pos_embed`, "
                             "`{last_blocks: N}`, or paths such as `layer4.2.bn3`.",
    "StageConfig.augment": "`train` (RandomResizedCrop, flip, colour jitter), `test` (resize, "
                           "centre crop), `test2` (test DA with flip, light jitter and a "
                           "shifted crop), `train_resize_crop` (the paper's appendix D).",
    "StageConfig.optimizer": "The optimiser; weight decay skips biases and norm parameters "
                             "unless `decay_all`.",
    "StageConfig.schedule": "Learning-rate schedule per iteration: linear warm-up, then cosine, "
                            "step or constant.",
    "StageConfig.label_smoothing": "Label smoothing of the cross-entropy.",
    "StageConfig.crop_scale": "RandomResizedCrop's area range [min, max] for train DA.",
    "StageConfig.bn_momentum": "BN running-statistics momentum while the stage trains; `null` "
                               "re-estimates them as an exact average over the stage's batches.",
    "StageConfig.grad_clip": "Clip the gradients' global norm to this value.",
    "StageConfig.auto_augment": "A timm auto-augment string: `rand-m9-mstd0.5-inc1` "
                                "(RandAugment), `augmix-m5-w4-d2`, `original`, ...",
    "StageConfig.random_erasing": "Probability of timm's RandomErasing on the normalised image.",
    "StageConfig.albumentations": "An albumentations pipeline (its `A.to_dict` form inline, or a "
                                  "file written by `A.save`) on the stage's training images, "
                                  "seeded per sample from the run's seed; fgvc's crop stays. "
                                  "Needs `pip install 'fgvc[albumentations]'`.",
    "StageConfig.accumulate": "Batches per optimiser step (gradient accumulation).",
    "StageConfig.ema": "An exponential moving average of the weights (timm's ModelEmaV3); "
                       "`ema: {}` turns it on with the defaults.",
    "StageConfig.mixup": "timm's Mixup/CutMix with soft targets; `mixup: {}` turns it on with "
                         "the defaults. Train stage only; needs an even batch size.",
    "StageConfig.sampler": "Which images an epoch draws.",
    "StageConfig.loss": "Class weights in the cross-entropy.",
    "StageConfig.adapt_cache_gb": "An adapt stage on test DA runs the frozen part once and "
                                  "trains on its cached activations up to this size (above "
                                  "1 GB memory-mapped under the run folder); 0 turns it off.",
    "StageConfig.validate_every": "Epochs between validations (the last epoch always "
                                  "validates).",
    "StageConfig.method": "How the adapt stage adapts: `finetune` trains the adapted groups "
                          "with labels; every other method is label-free (the method page "
                          "describes each).",
    "StageConfig.data_split": "The split a label-free method adapts on (any split, labels "
                              "unused: `test` is transductive); default: the train split.",
    "StageConfig.reestimate": "Groups or module paths whose BN statistics are re-estimated "
                              "while their parameters stay frozen.",
    "StageConfig.reference_resolution": "`frechet` and `gaussian`: the resolution whose activation "
                                        "distribution is matched; default: the train stage's.",
    "StageConfig.preset": "`official`: the authors' fine-tuning for the architecture (ResNet: "
                          "classifier, last BN statistics, 60 epochs; ResNeXt-WSL: lr / 10, "
                          "test DA2; PNASNet: last cells, dropout in train mode, 1 epoch); "
                          "fields you set win.",
    # optimiser and schedule
    "OptimizerConfig.name": "`sgd` (the paper's) or `adamw`.",
    "OptimizerConfig.lr": "Peak learning rate (after warm-up).",
    "OptimizerConfig.momentum": "SGD momentum.",
    "OptimizerConfig.nesterov": "Nesterov momentum for SGD.",
    "OptimizerConfig.weight_decay": "Weight decay (not on biases and norm parameters unless "
                                    "`decay_all`).",
    "OptimizerConfig.betas": "AdamW's (beta1, beta2).",
    "OptimizerConfig.layer_decay": "timm's layer-wise decay: layer i of L gets lr x "
                                   "layer_decay^(L-i); models with a group matcher only.",
    "OptimizerConfig.decay_all": "Weight decay on biases and norm parameters too (the authors' "
                                 "release).",
    "ScheduleConfig.name": "`cosine` to `min_lr`, `step` (x `gamma` every `every` epochs) or "
                           "`constant`; applied per iteration.",
    "ScheduleConfig.warmup_epochs": "Linear warm-up from 0, in epochs (fractions allowed).",
    "ScheduleConfig.every": "`step`: epochs between decays.",
    "ScheduleConfig.gamma": "`step`: the factor applied at each decay.",
    "ScheduleConfig.min_lr": "`cosine`: the learning rate at the end.",
    # training options
    "EmaConfig.decay": "EMA decay per optimiser step.",
    "EmaConfig.warmup": "Ramp the decay up over the first steps: min(decay, 1 - (1 + t)^-2/3).",
    "EmaConfig.use_for_final": "End the stage with the EMA weights (stage 2 then starts from "
                               "them).",
    "MixupConfig.mixup_alpha": "Beta distribution parameter of mixup (0: no mixup).",
    "MixupConfig.cutmix_alpha": "Beta distribution parameter of CutMix (0: no CutMix).",
    "MixupConfig.prob": "Probability of mixing a batch.",
    "MixupConfig.switch_prob": "Probability of CutMix instead of mixup when both are on.",
    "SamplerConfig.name": "`random` (a permutation), `class_balanced` (class c drawn with "
                          "probability proportional to n_c^power) or `repeated_augmentation`.",
    "SamplerConfig.power": "`class_balanced`: 0.5 square-root sampling, 0 uniform over classes, "
                           "1 the data's own frequencies.",
    "SamplerConfig.repetitions": "`repeated_augmentation`: copies of each drawn image, on "
                                 "different processes.",
    "SamplerConfig.len_factor": "Epoch length as a multiple of the split's size.",
    "LossConfig.class_weights": "`inverse_sqrt` (1/sqrt(n_c)) or `inverse` (1/n_c), scaled to a "
                                "mean weight of 1 per image.",
    # evaluation, prediction, submission
    "InferenceConfig.resolutions": "Test resolutions; default: every stage's resolution "
                                   "(evaluate) or the last stage's (predict).",
    "InferenceConfig.batch_size": "Images per forward pass.",
    "InferenceConfig.crops": "Crops per image: `center`, `center_flip` or `ten_crop` (corners "
                             "and centre, and their mirror images).",
    "InferenceConfig.average": "How the crops of an image are combined: mean of `probs` or of "
                               "`logits`.",
    "EvaluateConfig.split": "The labelled split reported (accuracy, intervals, per class).",
    "PredictConfig.split": "The split predicted (usually the unlabelled test split).",
    "PredictConfig.keep_top_k": "Store only each image's k best classes instead of every "
                                "class's probability.",
    "SubmissionConfig.format": "The competition's CSV format (header, top-k, ids).",
    "SubmissionConfig.path": "The CSV's path; default `submissions/<run folder name>.csv`.",
    "SubmissionConfig.top_k": "Category ids per row; default: the format's.",
    "TrackingConfig.tensorboard": "TensorBoard event files in `runs/<name>/tensorboard/`.",
    "TrackingConfig.wandb": "Weights & Biases: `{project: ...}` and any other `wandb.init` "
                            "argument.",
    "TrackingConfig.mlflow": "MLflow: `{tracking_uri, experiment}`.",
    "CheckpointConfig.every_minutes": "Also write a resumable mid-epoch checkpoint on this "
                                      "timer (long epochs); default: at epoch ends only.",
    "CheckpointConfig.keep": "Which epoch's weights a stage ends with: `last`, or `best` by "
                             "`metric` (kept beside the last).",
    "CheckpointConfig.metric": "The validation metric `keep: best` compares.",
    # ensembles
    "EnsembleRecipe.name": "The ensemble's name: `<output_root>/<name>` and its submission.",
    "EnsembleRecipe.kind": "`ensemble`.",
    "EnsembleRecipe.members": "The runs (recipes) or saved predictions to combine.",
    "EnsembleRecipe.combine": "What is averaged across members (`log_probs`: a geometric "
                              "mean of the probabilities).",
    "EnsembleRecipe.output_root": "Folder holding the ensemble's folder.",
    "EnsembleRecipe.member_overrides": "`--set` overrides applied to every member recipe, "
                                       "before the member's own.",
    "EnsembleRecipe.submission": "The competition CSV written from the combined predictions.",
    "EnsembleMember.recipe": "A run recipe: run, reused when finished, resumed when stopped.",
    "EnsembleMember.predictions": "A saved predictions directory or run folder.",
    "EnsembleMember.weight": "This member's weight in the average.",
    "EnsembleMember.overrides": "`--set` overrides of this member's recipe.",
}

# Values for the fields a section cannot be built without, so its check() can be probed.
_REQUIRED = {"StageConfig": {"name": "train", "resolution": 224},
             "ModelConfig": {"arch": "resnet50"},
             "DatasetConfig": {"name": "synthetic"}}
_PROBES = {int: (-1, 0), float: (-1.0, 0.0, 1.0, 1.5)}
_SENTINEL = object()


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


@dataclass(frozen=True)
class FieldInfo:
    """One recipe field: ``path`` as written in YAML (``stages[].optimizer.lr``), its type hint,
    its default shown as YAML, the allowed values or range in words, and what it does."""

    path: str
    section: str
    name: str
    hint: Any
    required: bool
    default: str
    allowed: str
    description: str


def _arms(hint: Any) -> list[Any]:
    return list(get_args(hint)) if get_origin(hint) in (Union, types.UnionType) else [hint]


def _dataclass_in(hint: Any) -> type | None:
    """The section class a field holds (itself, optional, or as list items)."""
    for arm in _arms(hint):
        if get_origin(arm) is list:
            arm = get_args(arm)[0]
        if dataclasses.is_dataclass(arm):
            return arm
    return None


def type_text(hint: Any) -> str:
    """A type hint in words, as the reference page shows it."""
    if hint is Any:
        return "any"
    if hint is type(None):
        return "null"
    origin = get_origin(hint)
    if origin is Literal:
        return "choice"
    if origin in (Union, types.UnionType):
        return " or ".join(type_text(a) for a in get_args(hint))
    if origin is list:
        return f"list of {type_text(get_args(hint)[0])}"
    if origin is dict or dataclasses.is_dataclass(hint):
        return "mapping"
    return {int: "integer", float: "number", str: "text", bool: "boolean"}.get(hint, str(hint))


def _yaml(value: Any) -> str:
    """A default as a user writes it in YAML."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if dataclasses.is_dataclass(value):
        return "(section)"
    if isinstance(value, list):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _default_of(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return _SENTINEL


def _resolved_defaults(cls: type, name: str) -> str | None:
    """Defaults a section derives after construction (a stage's ``trainable`` and ``augment``
    depend on the stage's name): shown per case when they differ from the declared one."""
    if cls.__name__ != "StageConfig":
        return None
    values = {stage: _yaml(getattr(cls(name=stage, resolution=224), name))
              for stage in ("train", "adapt")}
    if len(set(values.values())) == 1:
        return None
    return "; ".join(f"{stage}: {value}" for stage, value in values.items())


def _literal_values(hint: Any) -> list[Any]:
    values: list[Any] = []
    for arm in _arms(hint):
        if get_origin(arm) is list:
            arm = get_args(arm)[0]
        if get_origin(arm) is Literal:
            values += list(get_args(arm))
    return values


def _number_kind(hint: Any) -> type | None:
    for arm in _arms(hint):
        if arm in (int, float):
            return arm
    return None


def _probe_messages(cls: type, name: str, kind: type) -> list[str]:
    """The section's own ``check()`` words for this field's range: the messages it gives for
    a few out-of-range values, without the value (``must be in [0, 1)``)."""
    base = dict(_REQUIRED.get(cls.__name__, {}))
    found: list[str] = []
    for value in _PROBES[kind]:
        try:
            obj = cls(**{**base, name: value})
            problems = obj.check() if hasattr(obj, "check") else []
        except Exception:  # a section that cannot be built alone says nothing here
            return found
        for field_name, message in problems:
            text = re.sub(r",? got .*$", "", message).strip()
            if field_name == name and text.startswith("must") and text not in found:
                found.append(text)
    return found


def allowed_text(cls: type, name: str, hint: Any) -> str:
    """The values or range a field accepts, in words: choices, the section's own check and the
    per-field bounds of ``limits.py``."""
    choices = _literal_values(hint)
    if choices:
        return ", ".join(f"`{_yaml(c)}`" for c in choices)
    kind = _number_kind(hint)
    if kind is None:
        return ""
    parts = _probe_messages(cls, name, kind)
    bounds = bounds_for(cls, name)
    if bounds is not None:
        low, high, unit = bounds
        if low is not None:
            parts.append(f"at least {_number(low)}")
        parts.append(f"at most {_number(high)}{unit}")
    elif kind is int and not parts:
        parts.append(f"within ±{DEFAULT_INT_LIMIT:,}")
    return "; ".join(parts)


def _number(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:,g}"


def _field_comments(cls: type) -> dict[str, str]:
    """The comment on each field's line, or on the lines right above it, in the class source."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    comments: dict[str, str] = {}
    pending: list[str] = []
    by_line: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            by_line[tok.start[0]] = tok.string.lstrip("#").strip()
    for number, line in enumerate(source.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(by_line.get(number, ""))
            continue
        match = re.match(r"\s+([A-Za-z_]\w*)\s*:", line)
        if match and "(" not in stripped.split(":")[0]:
            text = " ".join(pending + ([by_line[number]] if number in by_line else []))
            if text:
                comments.setdefault(match.group(1), text)
        pending = []
    return comments


def description_of(cls: type, name: str) -> str:
    """What a field does: ``DESCRIPTIONS`` along the class's MRO, else its source comment."""
    for klass in cls.__mro__:
        found = DESCRIPTIONS.get(f"{klass.__name__}.{name}")
        if found:
            return found
    for klass in cls.__mro__:
        if dataclasses.is_dataclass(klass):
            comment = _field_comments(klass).get(name)
            if comment:
                return comment
    return ""


def walk(cls: type, prefix: str = "", section: str = "") -> list[FieldInfo]:
    """Every field of section ``cls`` and of the sections it nests, depth first."""
    out: list[FieldInfo] = []
    hints = _hints(cls)
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        path = f"{prefix}{field.name}"
        default = _default_of(field)
        shown = "" if default is _SENTINEL else _yaml(default)
        resolved = _resolved_defaults(cls, field.name) if default is None else None
        if resolved:
            shown = resolved
        out.append(FieldInfo(path, section or "(top level)", field.name, hint,
                             default is _SENTINEL, shown, allowed_text(cls, field.name, hint),
                             description_of(cls, field.name)))
        inner = _dataclass_in(hint)
        if inner is not None:
            is_list = any(get_origin(a) is list for a in _arms(hint))
            child = f"{path}[]" if is_list else path
            out += walk(inner, f"{child}.", child)
    return out


def recipe_classes() -> tuple[type, type]:
    """The two top-level recipe types: a run and an ensemble (``kind: ensemble``)."""
    from fgvc.recipes.recipe import EnsembleRecipe, Recipe

    return Recipe, EnsembleRecipe


def recipe_fields() -> dict[str, list[FieldInfo]]:
    """Every field of a run recipe and of an ensemble recipe."""
    run, ensemble = recipe_classes()
    return {"run": walk(run), "ensemble": walk(ensemble)}


# --- JSON Schema ----------------------------------------------------------------------------

def _number_schema(kind: type, bounds: tuple | None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "integer" if kind is int else "number"}
    if bounds is not None:
        low, high, _unit = bounds
        out["maximum"] = high
        if low is not None:
            out["minimum"] = low
    elif kind is int:
        out.update(minimum=-DEFAULT_INT_LIMIT, maximum=DEFAULT_INT_LIMIT)
    return out


def _schema_of(hint: Any, bounds: tuple | None, defs: dict[str, Any]) -> dict[str, Any]:
    """A type hint as JSON Schema; sections become ``definitions`` referenced by name."""
    origin = get_origin(hint)
    if hint is Any:
        return {}
    if hint is type(None):
        return {"type": "null"}
    if origin is Literal:
        return {"enum": list(get_args(hint))}
    if origin in (Union, types.UnionType):
        return {"anyOf": [_schema_of(a, bounds, defs) for a in get_args(hint)]}
    if origin is list:
        return {"type": "array", "items": _schema_of(get_args(hint)[0], bounds, defs)}
    if origin is dict:
        args = get_args(hint)
        value = args[1] if len(args) == 2 else Any
        return ({"type": "object"} if value is Any
                else {"type": "object", "additionalProperties": _schema_of(value, None, defs)})
    if dataclasses.is_dataclass(hint):
        _define(hint, defs)
        return {"$ref": f"#/definitions/{hint.__name__}"}
    if hint in (int, float):
        return _number_schema(hint, bounds)
    if hint is bool:
        return {"type": "boolean"}
    if hint is str:
        return {"type": "string"}
    raise TypeError(f"no JSON Schema for the type hint {hint!r}")


def _json_default(value: Any) -> Any:
    from fgvc.recipes.schema import to_plain

    return to_plain(value)


def _define(cls: type, defs: dict[str, Any]) -> None:
    if cls.__name__ in defs:
        return
    defs[cls.__name__] = {}  # placeholder: sections may nest themselves
    hints = _hints(cls)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for field in dataclasses.fields(cls):
        prop = _schema_of(hints[field.name], bounds_for(cls, field.name), defs)
        text = description_of(cls, field.name)
        allowed = allowed_text(cls, field.name, hints[field.name])
        if allowed and not _literal_values(hints[field.name]):
            text = f"{text} Allowed: {allowed}." if text else f"Allowed: {allowed}."
        if text:
            prop = {**prop, "description": text}
        default = _default_of(field)
        if default is _SENTINEL:
            required.append(field.name)
        elif not dataclasses.is_dataclass(default):
            prop = {**prop, "default": _json_default(default)}
        properties[field.name] = prop
    defs[cls.__name__] = {"type": "object", "properties": properties, "required": required,
                          "additionalProperties": False}


def _dataset_names_and_options() -> tuple[list[str], dict[str, dict[str, Any]]]:
    from fgvc.datasets import registry

    names = registry.names()
    return names, {name: registry.get(name).options for name in names}


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft-07) of a recipe file: a run recipe, or an ensemble recipe when
    ``kind: ensemble``. Dataset names are the registered adapters, and each adapter's declared
    options are typed under ``dataset.options``."""
    run, ensemble = recipe_classes()
    defs: dict[str, Any] = {}
    _define(run, defs)
    _define(ensemble, defs)
    names, options = _dataset_names_and_options()
    dataset = defs["DatasetConfig"]["properties"]
    dataset["name"] = {**dataset["name"], "enum": names}
    defs["DatasetConfig"]["allOf"] = [
        {"if": {"properties": {"name": {"const": name}}, "required": ["name"]},
         "then": {"properties": {"options": {
             "type": "object",
             "properties": {key: _schema_of(hint, None, defs) for key, hint in declared.items()}}}}}
        for name, declared in options.items() if declared]
    from fgvc.models.catalog import ENTRIES

    arch = defs["ModelConfig"]["properties"]["arch"]
    defs["ModelConfig"]["properties"]["arch"] = {**arch, "examples": [e.name for e in ENTRIES]}
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": "fgvc recipe",
        "description": "A recipe for `fgvc run` (generated by `fgvc schema` from the schema that "
                       "validates recipes; `fgvc validate` checks what this cannot: data on "
                       "disk, models, cross-field rules).",
        "if": {"properties": {"kind": {"const": "ensemble"}}, "required": ["kind"]},
        "then": {"$ref": f"#/definitions/{ensemble.__name__}"},
        "else": {"$ref": f"#/definitions/{run.__name__}"},
        "definitions": defs,
    }


def schema_text() -> str:
    """The JSON Schema as the text ``fgvc schema`` prints and ``recipes/fgvc.schema.json`` holds."""
    import json

    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


__all__ = ["DESCRIPTIONS", "SCHEMA_FILE", "FieldInfo", "allowed_text", "description_of",
           "json_schema", "recipe_fields", "schema_text", "type_text", "walk"]

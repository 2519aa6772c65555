"""Training options through whole runs: exact resume with EMA + mixup + class-balanced sampling,
the best epoch's (EMA) weights carried into predictions and the next stage, compile fallback,
and the plan ``fgvc validate`` prints."""

from __future__ import annotations

import json

import torch
import yaml

from fgvc.cli import main

OPTIONS = {"ema": {"decay": 0.5, "warmup": False}, "mixup": {"prob": 1.0},
           "sampler": {"name": "class_balanced", "power": 0.5},
           "auto_augment": "rand-m9-mstd0.5-inc1", "random_erasing": 0.5, "accumulate": 2,
           "loss": {"class_weights": "inverse_sqrt"}}


def write_recipe(tmp_path, data) -> str:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_resume_is_bit_identical_with_ema_mixup_and_class_balanced_sampling(
        tiny_recipe_dict, tmp_path, interrupt_training):
    tiny_recipe_dict["stages"] = tiny_recipe_dict["stages"][:1]
    tiny_recipe_dict["stages"][0].update(OPTIONS)
    tiny_recipe_dict["predict"] = tiny_recipe_dict["submission"] = None
    recipe = write_recipe(tmp_path, tiny_recipe_dict)
    assert main(["run", recipe]) == 0

    restore = interrupt_training(2)
    assert main(["run", recipe]) == 130
    assert "ema" in torch.load(tmp_path / "runs/tiny-2/checkpoints/train_last.pt",
                               weights_only=True)
    restore()
    assert main(["run", recipe, "--resume"]) == 0
    straight, resumed = (torch.load(tmp_path / f"runs/{d}/checkpoints/train.pt",
                                    weights_only=True) for d in ("tiny", "tiny-2"))
    assert straight["selected"] == resumed["selected"] == {"epoch": 2, "weights": "ema",
                                                          "keep": "last"}
    for key, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    drop = ("seconds", "epoch_seconds", "images_per_second")
    a, b = ([{k: v for k, v in r.items() if k not in drop} for r in rows(tmp_path / "runs" / d)]
            for d in ("tiny", "tiny-2"))
    assert a == b and all("val_ema_top1" in r for r in a)


def test_best_ema_epoch_feeds_predictions_and_the_next_stage(tiny_recipe_dict, tmp_path,
                                                             monkeypatch):
    import fgvc.engine.stage as stage_module

    tiny_recipe_dict["stages"][0].update(epochs=3, ema={"decay": 0.5, "warmup": False})
    tiny_recipe_dict["checkpoint"] = {"keep": "best", "metric": "val_top1"}
    tiny_recipe_dict["model"]["compile"] = True
    # The adapt stage sees the whole model (not a cached tail) so its start can be compared.
    tiny_recipe_dict["stages"][1]["adapt_cache_gb"] = 0
    monkeypatch.setattr(torch, "compile", lambda module, backend: _no_compiler)

    emas, snapshots, adapt_start = [], [], []
    real_build_ema, real_train, real_evaluate = (stage_module.build_ema,
                                                 stage_module.train_one_epoch,
                                                 stage_module.evaluate)

    def build_ema(model, cfg):
        emas.append(real_build_ema(model, cfg))
        return emas[-1]

    def train_one_epoch(model, loader, *args, **kwargs):
        if kwargs["desc"].startswith("adapt"):
            net = getattr(model, "module", model)  # inside the compile wrapper
            adapt_start.append({k: v.clone() for k, v in net.state_dict().items()})
        result = real_train(model, loader, *args, **kwargs)
        if emas and not kwargs["desc"].startswith("adapt"):
            snapshots.append({k: v.clone() for k, v in emas[0].module.state_dict().items()})
        return result

    ema_scores = iter([10.0, 30.0, 20.0])  # epoch 2 is the best, for the EMA weights

    def evaluate(model, loader, device, **kwargs):
        result = real_evaluate(model, loader, device, **kwargs)
        if emas and model is emas[0].module:
            result["top1"] = next(ema_scores)
        return result

    monkeypatch.setattr(stage_module, "build_ema", build_ema)
    monkeypatch.setattr(stage_module, "train_one_epoch", train_one_epoch)
    monkeypatch.setattr(stage_module, "evaluate", evaluate)
    assert main(["run", write_recipe(tmp_path, tiny_recipe_dict)]) == 0

    run_dir = tmp_path / "runs" / "tiny"
    final = torch.load(run_dir / "checkpoints/train.pt", weights_only=True)
    last = torch.load(run_dir / "checkpoints/train_last_epoch.pt", weights_only=True)
    assert final["selected"] == {"epoch": 2, "weights": "ema", "keep": "best",
                                 "metric": "val_top1", "value": 30.0}
    assert len(snapshots) == 3
    for key, value in final["model"].items():
        assert torch.equal(value, snapshots[1][key]), key  # epoch 2's EMA weights
        assert torch.equal(last["model"][key], snapshots[2][key]), key
        assert torch.equal(adapt_start[0][key], value), key  # stage 2 starts from them
    assert not (run_dir / "checkpoints/train_best.pt").exists()
    metrics = rows(run_dir)
    assert [r.get("best_epoch") for r in metrics] == [1, 2, 2, 1]
    assert [r["val_ema_top1"] for r in metrics[:3]] == [10.0, 30.0, 20.0]
    report = (run_dir / "report.md").read_text()
    assert "weights: epoch 2 (EMA), best val_top1 30.00" in report
    assert "weights: epoch 1 (raw), best val_top1" in report  # the adapt stage
    log = (run_dir / "log.txt").read_text()
    assert "model.compile: torch.compile failed here (TorchDynamoException: no compiler)" in log
    assert (run_dir / "predictions" / "probs.npy").is_file()


def _no_compiler(*args, **kwargs):
    from torch._dynamo.exc import TorchDynamoException

    raise TorchDynamoException("no compiler")  # a compile failure: the run goes on eagerly


def test_validate_shows_the_training_options(tiny_recipe_dict, tmp_path, capsys):
    tiny_recipe_dict["stages"][0].update(OPTIONS, optimizer={"lr": 0.1, "layer_decay": 0.75})
    tiny_recipe_dict["stages"][1].update(augment="train", sampler={
        "name": "repeated_augmentation", "repetitions": 2})
    tiny_recipe_dict["checkpoint"] = {"keep": "best"}
    tiny_recipe_dict["model"]["compile"] = True
    assert main(["validate", write_recipe(tmp_path, tiny_recipe_dict)]) == 0
    out = capsys.readouterr().out
    for text in ("torch.compile (eager where unsupported)", "EMA decay 0.5, EMA weights kept",
                 "mixup alpha 0.8 / cutmix alpha 1, prob 1", "auto_augment rand-m9-mstd0.5-inc1",
                 "random erasing p=0.5", "accumulate 2 batches per step (effective batch 16",
                 "layer decay 0.75", "class-balanced sampler (power 0.5",
                 "class weights inverse_sqrt", "repeated-augmentation sampler (2 repetitions",
                 "warning: adapt stage on train DA ('train')",
                 "checkpoint: each stage ends with the best epoch's weights by val_top1"):
        assert text in out, text


def test_bad_auto_augment_words_are_refused_by_validate(tiny_recipe_dict, tmp_path, capsys):
    tiny_recipe_dict["stages"][0]["auto_augment"] = "rand-m9-zz3"
    assert main(["validate", write_recipe(tmp_path, tiny_recipe_dict)]) == 2
    err = capsys.readouterr().err
    assert "error: auto_augment: timm cannot read 'rand-m9-zz3'" in err

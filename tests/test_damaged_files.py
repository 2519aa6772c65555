"""Damaged files: a checkpoint with flipped bits or cut short is detected (its checksum, or a
load that fails), the previous checkpoint is used with one line saying so, and where there is
none the failure is one line naming the file; weights of another architecture, a corrupt
.safetensors and a text file given as weights are one line each; checkpoints written before
the checksum load as before, without a warning."""

from __future__ import annotations

import logging
import random
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from fgvc.cli import main
from fgvc.engine.checkpoint import (
    CheckpointError,
    describe_load_failure,
    load_checkpoint,
    previous_path,
    save_checkpoint,
)


def flip_bits(path: Path, count: int = 8, seed: int = 0) -> None:
    """Flip ``count`` bits inside the tensor data of a torch checkpoint (its largest record), as
    a disk or a copy may: the zip structure stays intact, so torch alone would not notice."""
    with zipfile.ZipFile(path) as archive:
        record = max((i for i in archive.infolist() if "/data/" in i.filename),
                     key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    # The record's bytes follow its 30-byte local header, name and extra field.
    name_len = int.from_bytes(data[record.header_offset + 26:record.header_offset + 28], "little")
    extra_len = int.from_bytes(data[record.header_offset + 28:record.header_offset + 30], "little")
    start = record.header_offset + 30 + name_len + extra_len
    rng = random.Random(seed)
    for _ in range(count):
        data[start + rng.randrange(record.file_size)] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def model_payload(epoch: int) -> dict:
    torch.manual_seed(epoch)
    return {"model": {"w": torch.randn(64, 64), "b": torch.randn(64)}, "epoch": epoch,
            "optimizer": {"state": {0: {"momentum_buffer": torch.randn(64)}},
                          "param_groups": [{"lr": 0.1, "params": [0]}]}}


def test_flipped_bits_are_detected_and_the_previous_checkpoint_is_used(tmp_path, caplog):
    path = tmp_path / "train_last.pt"
    save_checkpoint(path, model_payload(1), keep_previous=True)
    save_checkpoint(path, model_payload(2), keep_previous=True)
    flip_bits(path)
    plain = torch.load(path, weights_only=True)  # torch alone loads it without a word
    assert plain["epoch"] == 2 and not torch.equal(plain["model"]["w"], model_payload(2)["model"]["w"])
    with caplog.at_level(logging.WARNING):
        state = load_checkpoint(path)
    assert state["epoch"] == 1 and torch.equal(state["model"]["w"], model_payload(1)["model"]["w"])
    assert "checksum" not in state  # callers see the payload they saved
    (line,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert line == (f"checkpoint {path} is damaged: its contents differ from the checksum saved "
                    f"with it (bits changed on disk or in a copy); falling back to the previous "
                    f"checkpoint {previous_path(path)}")


def test_a_changed_plain_value_is_detected_too(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, model_payload(1))
    state = torch.load(path, weights_only=True)
    state["epoch"] = 7  # e.g. a flipped bit in the pickled part that still unpickles
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=rf"^checkpoint {path} is damaged: "):
        load_checkpoint(path)


def test_a_checkpoint_read_with_torch_and_saved_again_loads(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, model_payload(1))
    state = torch.load(path, weights_only=True)  # still carries the old checksum
    state["epoch"] = 5
    save_checkpoint(path, state)
    assert load_checkpoint(path)["epoch"] == 5


def test_damage_without_a_previous_checkpoint_is_one_line(tmp_path):
    path = tmp_path / "train.pt"
    save_checkpoint(path, model_payload(1))
    flip_bits(path)
    with pytest.raises(CheckpointError) as damaged:
        load_checkpoint(path)
    assert str(damaged.value).startswith(f"checkpoint {path} is damaged") and "\n" not in str(damaged.value)
    path.write_bytes(path.read_bytes()[:300])  # cut short
    with pytest.raises(CheckpointError) as cut:
        load_checkpoint(path)
    assert str(cut.value).startswith(f"cannot load checkpoint {path}: the file is damaged, "
                                     "incomplete or not a torch checkpoint")


def test_both_checkpoints_damaged_names_both(tmp_path):
    path = tmp_path / "train_last.pt"
    save_checkpoint(path, model_payload(1), keep_previous=True)
    save_checkpoint(path, model_payload(2), keep_previous=True)
    flip_bits(path)
    flip_bits(previous_path(path), seed=1)
    with pytest.raises(CheckpointError) as both:
        load_checkpoint(path)
    message = str(both.value)
    assert f"checkpoint {path} is damaged" in message
    assert f"the previous checkpoint is no better: checkpoint {previous_path(path)} is damaged" in message


def test_a_checkpoint_without_a_checksum_loads_quietly(tmp_path, caplog):
    path = tmp_path / "old.pt"
    torch.save(model_payload(3), path)  # as fgvc wrote checkpoints before the checksum
    with caplog.at_level(logging.DEBUG):
        state = load_checkpoint(path)
    assert state["epoch"] == 3 and torch.equal(state["model"]["b"], model_payload(3)["model"]["b"])
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_garbled_pickle_is_called_damaged_not_code(tmp_path):
    import argparse
    import pickle

    garbled = pickle.UnpicklingError(
        "Weights only load failed.\n WeightsUnpickler error: Unsupported global: GLOBAL "
        "torch._utils._rebuilt_tensor_v2 was not an allowed global by default. Please use ...")
    assert describe_load_failure(garbled).startswith("the file is damaged, incomplete or not a "
                                                     "torch checkpoint (UnpicklingError: "
                                                     "Unsupported global")
    torch.save({"model": argparse.Namespace(a=1)}, tmp_path / "code.pt")
    with pytest.raises(CheckpointError, match="holds pickled Python objects"):
        load_checkpoint(tmp_path / "code.pt")


def _interrupted_run(tiny_recipe_dict, tmp_path, interrupt_training) -> tuple[str, Path]:
    """A one-stage, three-epoch run stopped during epoch 3: its last checkpoint is epoch 2's,
    the previous one epoch 1's."""
    recipe = tiny_recipe_dict
    recipe["stages"] = recipe["stages"][:1]
    recipe["stages"][0]["epochs"] = 3
    recipe["predict"] = recipe["submission"] = None
    recipe["evaluate"]["resolutions"] = [32]
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    restore = interrupt_training(3)
    assert main(["run", str(path)]) == 130
    restore()
    return str(path), tmp_path / "runs" / "tiny"


def test_resume_from_a_flipped_checkpoint_uses_the_previous_one(tiny_recipe_dict, tmp_path,
                                                                interrupt_training, caplog):
    _, run_dir = _interrupted_run(tiny_recipe_dict, tmp_path, interrupt_training)
    last = run_dir / "checkpoints" / "train_last.pt"
    assert torch.load(last, weights_only=True)["epoch"] == 2
    flip_bits(last)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main(["resume", str(run_dir)]) == 0
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
              and "damaged" in r.getMessage()]
    assert warned == [f"checkpoint {last} is damaged: its contents differ from the checksum "
                      f"saved with it (bits changed on disk or in a copy); falling back to the "
                      f"previous checkpoint {previous_path(last)}"]
    assert f"train: resuming after epoch 1 from {last}" in caplog.text
    epochs = [line for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(epochs) == 3  # epoch 2 was trained again, not kept from the damaged file


def test_a_damaged_final_checkpoint_is_one_line_naming_it(finished_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    final = run_dir / "checkpoints" / "adapt.pt"
    flip_bits(final)
    assert main(["predict", str(run_dir), "--out", str(tmp_path / "p")]) == 2
    assert one_line_error(capsys) == (
        f"error: checkpoint {final} is damaged: its contents differ from the checksum saved "
        "with it (bits changed on disk or in a copy)\n")


def _run_with_weights(tiny_recipe_dict, tmp_path, weights: Path) -> list[str]:
    tiny_recipe_dict["model"]["weights"] = str(weights)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict))
    return ["run", str(path)]


def test_weights_of_another_architecture_are_one_line(tiny_recipe_dict, tmp_path, capsys):
    import timm

    weights = tmp_path / "vit.pth"
    torch.save(timm.create_model("test_vit", num_classes=4).state_dict(), weights)
    assert main(_run_with_weights(tiny_recipe_dict, tmp_path, weights)) == 2
    err = one_line_error(capsys)
    assert str(weights) in err and "missing from the checkpoint" in err
    assert "is this checkpoint for another architecture?" in err


def test_a_corrupt_safetensors_file_is_one_line(tiny_recipe_dict, tmp_path, capsys):
    import timm
    from safetensors.torch import save_file

    good = tmp_path / "good.safetensors"
    save_file(timm.create_model("test_resnet", num_classes=4).state_dict(), str(good))
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert main(_run_with_weights(tiny_recipe_dict, tmp_path, cut)) == 2
    err = one_line_error(capsys)
    assert err.startswith(f"error: cannot read {cut} as safetensors: the file is damaged or "
                          "incomplete (")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    assert main(_run_with_weights(tiny_recipe_dict, tmp_path, garbage)) == 2
    assert f"cannot read {garbage} as safetensors" in one_line_error(capsys)


def test_a_text_file_given_as_weights_is_one_line(tiny_recipe_dict, tmp_path, capsys):
    page = tmp_path / "resnet50.pth"  # what a failed download often saves
    page.write_text("<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head></html>\n")
    assert main(_run_with_weights(tiny_recipe_dict, tmp_path, page)) == 2
    assert one_line_error(capsys) == (
        f"error: {page}: a text file (it starts '<!DOCTYPE html> <html><head><title>404 N'), "
        "not weights (a safetensors file or a torch checkpoint)\n")
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    assert main(_run_with_weights(tiny_recipe_dict, tmp_path, empty)) == 2
    assert f"error: {empty}: an empty file, not weights" in one_line_error(capsys)


def test_a_flipped_fgvc_checkpoint_given_as_weights_is_one_line(finished_run, tiny_recipe_dict,
                                                                 tmp_path, capsys):
    weights = tmp_path / "train.pt"
    shutil.copy(finished_run / "checkpoints" / "train.pt", weights)
    flip_bits(weights)
    assert main(_run_with_weights(tiny_recipe_dict, tmp_path, weights)) == 2
    assert one_line_error(capsys) == (
        f"error: {weights} is damaged: its contents differ from the checksum saved with it "
        "(bits changed on disk or in a copy)\n")


def test_a_resume_checkpoint_of_another_architecture_is_one_line(tmp_path):
    import timm

    from fgvc.engine.resumable import ResumableState
    from fgvc.errors import WeightsError

    model = timm.create_model("test_resnet", num_classes=4)
    other = timm.create_model("test_vit", num_classes=4).state_dict()
    path = tmp_path / "train_last.pt"
    with pytest.raises(WeightsError) as refused:
        ResumableState(model, everything=True).load({"model": other}, path)
    message = str(refused.value)
    assert message.startswith(f"{path}: does not fit ResNet (") and "\n" not in message
    assert "tensor(s) missing" in message and "unknown tensor(s)" in message
    for p in model.parameters():  # a frozen part: the trainable rest is checked the same way
        p.requires_grad = p is model.fc.weight
    with pytest.raises(WeightsError, match=rf"^{path}: does not fit ResNet"):
        ResumableState(model, everything=False).load(
            {"model": {"fc.weight": torch.zeros(3, 3)}, "frozen_digest":
             ResumableState(model, everything=False).digest}, path)

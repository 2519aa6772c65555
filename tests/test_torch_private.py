"""The private torch / torchvision APIs fgvc uses (``fgvc/torch_compat.py``): each is still
there and does what fgvc relies on in the installed versions (a failure names the private API
that changed), and each fallback to the public path gives what the private path gives."""

from __future__ import annotations

import inspect
import logging

import numpy as np
import pytest
import torch
from conftest import TINY_OPTIONS
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms as T

from fgvc import torch_compat
from fgvc.datasets import load_dataset
from fgvc.engine import shared_batches
from fgvc.engine.data import make_loader
from fgvc.transforms import DataConfig, loader_transform

GRID = [(h, w) for h in (1, 2, 3, 7, 31, 224, 333, 480, 1001) for w in (1, 2, 5, 64, 299, 500, 997)]
SHORTS = (1, 8, 32, 224, 256, 448, 512)


def _changed(name: str, what: str) -> str:
    return (f"the private API {name} changed in this torch/torchvision ({what}): "
            "see fgvc/torch_compat.py for its fallback")


# --- torchvision.transforms.functional._compute_resized_output_size -------------------------

def test_private_resized_output_size_is_the_size_resize_gives():
    from torchvision.transforms import functional as F

    name = torch_compat.RESIZED_OUTPUT_SIZE
    assert callable(getattr(F, "_compute_resized_output_size", None)), _changed(name, "gone")
    try:
        params = list(inspect.signature(F._compute_resized_output_size).parameters)
    except (TypeError, ValueError):
        params = []
    assert params[:2] == ["image_size", "size"], _changed(name, f"parameters {params}")
    for h, w in [(3, 4), (40, 17), (17, 40), (9, 9)]:
        for short in (2, 5, 16):
            resized = T.Resize(short)(Image.new("RGB", (w, h)))
            expected = [resized.height, resized.width]
            got = F._compute_resized_output_size([h, w], [short])
            assert list(got) == expected, _changed(name, f"{h}x{w} to {short}: {got} != {expected}")


def test_resized_size_fallback_equals_the_private_path(monkeypatch, caplog):
    private = torch_compat._resized_output_size()
    assert private is not torch_compat.resized_output_size_public
    for h, w in GRID:
        for short in SHORTS:
            assert torch_compat.resized_output_size_public(h, w, short) == private(h, w, short), \
                (h, w, short)
    from torchvision.transforms import functional as F

    monkeypatch.delattr(F, "_compute_resized_output_size")
    monkeypatch.setattr(torch_compat, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="fgvc.torch_compat"):
        fallback = torch_compat._resized_output_size()
        torch_compat._resized_output_size()
    assert fallback is torch_compat.resized_output_size_public
    assert [torch_compat.RESIZED_OUTPUT_SIZE in r.getMessage() for r in caplog.records] == [True]


# --- torchvision.transforms.v2.functional._geometry._do_native_uint8_resize_on_cpu ----------

def test_private_native_uint8_resize_check_answers_per_mode():
    name = torch_compat.NATIVE_UINT8_RESIZE
    try:
        from torchvision.transforms.v2.functional._geometry import (
            _do_native_uint8_resize_on_cpu,
        )
    except ImportError:
        pytest.fail(_changed(name, "gone"))
    for mode in (T.InterpolationMode.BILINEAR, T.InterpolationMode.BICUBIC):
        try:
            answer = _do_native_uint8_resize_on_cpu(mode)
        except TypeError as error:
            pytest.fail(_changed(name, f"called with an InterpolationMode: {error}"))
        assert isinstance(answer, bool), _changed(name, f"answered {answer!r}, not a bool")
    assert _do_native_uint8_resize_on_cpu(T.InterpolationMode.BICUBIC), \
        _changed(name, "bicubic uint8 is no longer resized natively")


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_native_resize_fallback_gives_the_same_pixels(monkeypatch, interpolation):
    """Without the private check ``resize_uint8`` takes torchvision's public ``resize``: the
    same pixels as the direct call the check allows."""
    import fgvc.transforms as transforms

    mode = DataConfig(interpolation=interpolation).mode
    rng = np.random.default_rng(1)
    pixels = torch.from_numpy(rng.integers(0, 256, (70, 95, 3), dtype=np.uint8)).permute(2, 0, 1)
    cases = [(pixels, (40, 54)), (pixels[:, 3:60, 7:80], (96, 96)), (pixels, (70, 95))]
    private = [transforms.resize_uint8(view, h, w, mode) for view, (h, w) in cases]
    monkeypatch.setattr(transforms, "_native_uint8_resize", lambda mode: False)
    public = [transforms.resize_uint8(view, h, w, mode) for view, (h, w) in cases]
    for a, b in zip(private, public, strict=True):
        assert a.dtype == b.dtype == torch.uint8 and torch.equal(a, b)

    from torchvision.transforms.v2.functional import _geometry

    monkeypatch.delattr(_geometry, "_do_native_uint8_resize_on_cpu")
    monkeypatch.setattr(torch_compat, "_warned", set())
    assert torch_compat.native_uint8_resize_on_cpu.__wrapped__(mode) is False


# --- torch.utils.data: _MultiProcessingDataLoaderIter._process_data, _utils.pin_memory --------

def test_private_loader_hook_is_as_shared_batches_expect():
    """``_process_data`` exists with fgvc's signature, runs in the main process once per batch
    with the batch a worker sent, returns what the iterator yields, and hands out the next
    task itself (so a batch copied before it is copied before its buffer's next task)."""
    problem = torch_compat.loader_hook_problem.__wrapped__()
    assert problem is None, f"the private API changed in this torch: {problem}"
    base = torch_compat.loader_iter_base()
    handed_out = []

    class Batches:
        def __iter__(self):
            for i in range(0, 12, 2):
                handed_out.append(i)
                yield [i, i + 1]

        def __len__(self):
            return 6

    seen = []

    class Recording(base):
        def _process_data(self, data, *args):
            before = len(handed_out)
            out = super()._process_data(data, *args)
            seen.append((data.tolist(), len(handed_out) - before))
            return out

    loader = DataLoader(list(range(12)), batch_sampler=Batches(), num_workers=1,
                        prefetch_factor=2)
    batches = [b.tolist() for b in Recording(loader)]
    name = torch_compat.PROCESS_DATA
    assert batches == [[i, i + 1] for i in range(0, 12, 2)], _changed(name, f"yielded {batches}")
    assert [data for data, _ in seen] == batches, _changed(name, f"called with {seen}")
    assert [n for _, n in seen] == [1, 1, 1, 1, 0, 0], \
        _changed(name, f"tasks handed out per call: {[n for _, n in seen]}")


def test_private_pin_memory_defers_to_the_batchs_own():
    from torch.utils.data._utils.pin_memory import pin_memory

    class Own:
        def pin_memory(self, device=None):
            return "pinned"

    name = torch_compat.PIN_MEMORY
    assert pin_memory(Own()) == "pinned", _changed(name, "a batch's own pin_memory is not used")
    assert pin_memory((1, "a"), None) == (1, "a"), _changed(name, "(data, device) call")


def test_loaders_fall_back_to_torchs_iterator_with_the_same_batches(
        tiny_data_root, monkeypatch, caplog):
    index = load_dataset("synthetic", tiny_data_root, TINY_OPTIONS)

    def batches():
        loader = make_loader(index, "train", transform=loader_transform("train", 24, DataConfig()),
                             batch_size=2, num_workers=1, on_bad_image="fail", shuffle=True,
                             seed=5)
        iterator = iter(loader)
        return isinstance(iterator, shared_batches.SharedBatchIter), list(iterator)

    shared, with_hook = batches()
    assert shared
    monkeypatch.setattr(torch_compat, "loader_hook_problem", lambda: "X._process_data is gone")
    monkeypatch.setattr(torch_compat, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="fgvc.torch_compat"):
        shared, without = batches()
        batches()
    assert not shared
    assert ["X._process_data is gone" in r.getMessage() for r in caplog.records] == [True]
    assert len(with_hook) == len(without) > 2
    for (images, labels, indices, bad), (f_images, f_labels, f_indices, f_bad) in zip(
            with_hook, without, strict=True):
        assert torch.equal(images, f_images) and torch.equal(indices, f_indices)
        assert torch.equal(labels, f_labels) and bad == f_bad == 0

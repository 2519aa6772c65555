"""Training loaders: one loader with persistent workers serves every epoch of a stage, batch for
batch what a new loader per epoch gives (order, augmentation draws, resumed epochs)."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_OPTIONS
from torch.utils.data import DataLoader

from fgvc.datasets import load_dataset
from fgvc.engine.data import make_loader
from fgvc.engine.seeding import epoch_seed
from fgvc.recipes.training import SamplerConfig
from fgvc.transforms import DataConfig, loader_transform


def _loader(index, *, workers: int, persistent: bool, epoch: int = 0, skip: int = 0,
            sampler_cfg: SamplerConfig | None = None) -> DataLoader:
    return make_loader(index, "train", transform=loader_transform("train", 24, DataConfig()),
                       batch_size=8, num_workers=workers, on_bad_image="fail", shuffle=True,
                       seed=3, epoch=epoch, drop_last=True, skip=skip, sampler_cfg=sampler_cfg,
                       persistent=persistent)


def _batches(loader: DataLoader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(images.clone(), indices.clone()) for images, _labels, indices, _bad in loader]


def _equal(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1])
                                    for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("sampler", [None, "repeated_augmentation"])
def test_persistent_loader_serves_every_epoch_as_a_new_loader(tiny_data_root, sampler):
    index = load_dataset("synthetic", tiny_data_root, TINY_OPTIONS)
    cfg = SamplerConfig(name=sampler) if sampler else None
    kept = _loader(index, workers=2, persistent=True, sampler_cfg=cfg)
    assert kept.persistent_workers
    seen = []
    for epoch, skip in ((0, 0), (1, 8), (2, 0), (1, 0)):  # epoch 1 first resumed after a batch
        kept.epochs.set_epoch(epoch, skip)
        got = _batches(kept)
        fresh = _batches(_loader(index, workers=0, persistent=False, epoch=epoch, skip=skip,
                                 sampler_cfg=cfg))
        assert _equal(got, fresh), (epoch, skip)
        assert len(kept) == len(got)
        seen.append(got)
    assert _equal(seen[1], seen[3][1:])  # the resumed epoch is the whole epoch's tail
    assert not _equal(seen[0], seen[2])  # epochs differ


def test_shuffle_is_a_plain_shuffled_loaders_order(tiny_data_root):
    """The order is the one ``DataLoader(shuffle=True)`` draws with the epoch's generator (the
    order fgvc's loaders drew before they persisted: recorded figures stay valid)."""
    index = load_dataset("synthetic", tiny_data_root, TINY_OPTIONS)
    count = len(index.split("train"))
    for epoch in (0, 5):
        plain = DataLoader(range(count), batch_size=8, shuffle=True, drop_last=True,
                           generator=torch.Generator().manual_seed(epoch_seed(3, epoch, 0)))
        ours = _loader(index, workers=0, persistent=False, epoch=epoch)
        assert [b.tolist() for b in plain] == [i.tolist() for _, i in _batches(ours)]


@pytest.mark.parametrize("orphaned", [False, True])
def test_process_with_live_workers_exits(tiny_data_root, tmp_path, orphaned):
    """Workers ignore SIGTERM, which multiprocessing sends them at exit before waiting for them:
    a process ending with a loader's workers still alive (persistent, or held by a traceback)
    must end them itself instead of waiting forever; so must one whose workers outlived their
    iterator (``orphaned``: an iterator freed by the garbage collector on one of its own queue
    threads, whose stop message never left, as a failing test's persistent loader once was)."""
    import subprocess
    import sys

    orphan = ("import fgvc.engine.data as data\n"
              "data._iterators_with_workers.clear()\n") if orphaned else ""
    script = tmp_path / "crash.py"
    script.write_text(
        "import sys\n"
        "from fgvc.datasets import load_dataset\n"
        "from fgvc.engine.data import make_loader\n"
        "from fgvc.transforms import DataConfig, loader_transform\n"
        f"index = load_dataset('synthetic', {str(tiny_data_root)!r}, {TINY_OPTIONS!r})\n"
        "loader = make_loader(index, 'train', transform=loader_transform('train', 24, "
        "DataConfig()), batch_size=8, num_workers=2, on_bad_image='fail', shuffle=True, "
        "persistent=True)\n"
        "for batch in loader:\n"
        "    pass\n"
        f"{orphan}"
        "for batch in loader:\n"
        "    raise RuntimeError('crash with the workers busy')\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1 and "crash with the workers busy" in done.stderr

"""Progress bars for long loops: shown on a terminal, silent in logs and pipes."""

from __future__ import annotations

from collections.abc import Iterable

from tqdm import tqdm


def progress(iterable: Iterable | None = None, desc: str = "", **kwargs) -> tqdm:
    kwargs.setdefault("leave", False)
    return tqdm(iterable, desc=desc, dynamic_ncols=True, disable=None, **kwargs)

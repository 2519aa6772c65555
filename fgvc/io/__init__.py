"""Generic file I/O, the lowest floor: atomic writes and fsync (:mod:`fgvc.io.atomic`) and the
one lock (:mod:`fgvc.io.lock`). Imports nothing from fgvc but :mod:`fgvc.errors`."""

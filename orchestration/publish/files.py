"""Published files are replaced whole: written beside under a temporary name, then renamed
into place, so a reader (or a crash) meets the previous file or the new one, never half."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replaced(final: Path) -> Iterator[Path]:
    """A temporary path beside ``final`` to write; renamed over ``final`` when the block ends,
    removed if it raises. Temporaries of ``final`` that a killed run left (a snapshot's can be
    gigabytes) are removed first: writers run one at a time (the writers' pool), so no live
    run owns one."""
    final.parent.mkdir(parents=True, exist_ok=True)
    for leftover in final.parent.glob(f".{final.name}.*.tmp"):
        leftover.unlink(missing_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, final)

"""The benchmark's disk: how much one size needs, checked before it starts, and how much it used.

A size that runs out of disk fails late — at 1,000,000 accounts after the simulation's and the
ingestion's hour — and leaves nothing to report. So the sizes are checked first against the
least they can need, per account-month, from what benches used at their peak (``DiskWatch``).
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from types import TracebackType

# The least peak disk use per account and month simulated (the held-back month included) any
# bench has measured: the landing zone, the warehouse with the floor's table, its write-ahead
# log and DuckDB's spill files, the analyst snapshot's two copies, the one run's own warehouse
# and snapshot (deleted after it), the pandas baseline's Parquet. 10,000 accounts × 25 months
# peaked at 3.3 GiB (13.9 KiB; ``DiskWatch``, 9696a23) and 100,000 × 25 at 34.7 GiB (14.6 KiB);
# 1,000,000 × 5 at 50.5 GiB (10.6 KiB; the disk's use, 9584034). A lower bound: a size it
# stops would surely not fit, and one it lets run may still need more (the floor's one
# statement once spilled 38 GiB at 1,000,000 × 4).
BYTES_PER_ACCOUNT_MONTH = 10 * 1024


class NotEnoughDisk(SystemExit):
    """A size the disk cannot hold: raised before anything of it runs."""


def size_folder(out: Path, accounts: int) -> Path:
    """Where the bench keeps one size's files under its ``--out``."""
    return out / f"n{accounts}"


def needed_bytes(accounts: int, months: int) -> int:
    """The least a size of ``accounts`` × ``months`` (plus the month held back) needs at its
    peak."""
    return accounts * (months + 1) * BYTES_PER_ACCOUNT_MONTH


def check_disk(out: Path, sizes: list[int], months: int) -> None:
    """Stop before the bench if the free disk under ``out`` cannot hold its sizes, saying what
    would fit. Each size keeps its folder (``size_folder``) when done and the next one
    starts beside it, so their peaks are added up: more than they take at once, since a size
    ends below its peak. A size's folder from an earlier bench is deleted before it runs,
    so it counts as free."""
    out.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out).free
    free += sum(tree_bytes(size_folder(out, accounts)) for accounts in sizes)
    before = 0
    for accounts in sizes:
        need = needed_bytes(accounts, months)
        if before + need <= free:
            before += need
            continue
        left = max(free - before, 0)
        fits = max(left // (accounts * BYTES_PER_ACCOUNT_MONTH) - 1, 0)
        raise NotEnoughDisk(
            f"{accounts:,} accounts × {months} months needs at least {need / 2**30:,.1f} GiB of "
            f"disk at its peak ({BYTES_PER_ACCOUNT_MONTH // 1024} KiB per account-month, "
            f"bench/disk.py), and {out} has {left / 2**30:,.1f} GiB for it"
            + (" after the sizes before it. " if before else ". ")
            + (f"At most {fits} months could fit (BENCH_MONTHS={fits}); " if fits else "")
            + "free some disk, or pass --no-disk-check (make bench BENCH_ARGS=--no-disk-check) to "
            "try anyway."
        )


def tree_bytes(root: Path) -> int:
    """The disk the files under ``root`` take (allocated blocks: DuckDB's files are sparse),
    each file once however many hard links name it (the one run's landing zone links the
    staged run's files)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            try:
                stat = os.lstat(os.path.join(folder, name))
            except FileNotFoundError:  # removed while walking: a run's temporary file
                continue
            if (stat.st_dev, stat.st_ino) not in seen:
                seen.add((stat.st_dev, stat.st_ino))
                total += stat.st_blocks * 512
    return total


class DiskWatch:
    """The peak of ``tree_bytes(root)`` while the block runs, sampled every ``every`` seconds
    from a thread (and once more at the end)."""

    def __init__(self, root: Path, every: float = 2.0) -> None:
        self.root, self.every = root, every
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="disk-watch", daemon=True)

    def _sample(self) -> None:
        self.peak_bytes = max(self.peak_bytes, tree_bytes(self.root))

    def _watch(self) -> None:
        while not self._stop.wait(self.every):
            self._sample()

    def __enter__(self) -> DiskWatch:
        self._sample()
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

"""Run a command and write the peak RSS (KiB) of it and the children it waited for to a file;
exit with its exit code.

    python bench/peak_rss.py OUT COMMAND…

Linux gives a child the memory high-water mark of the process it was forked from: ``exec``
keeps it as the child's peak. The bench process grows as it checks outputs with DuckDB (2.4 GiB
after the 100k floor's check), so every stage it started directly after that reported at least
that much: all of the 10k stages run after 100k peaked at 2,378 MiB, its simulation included.
This launcher is a fresh, small process; what it starts inherits its few MiB instead.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        sys.exit("usage: python bench/peak_rss.py OUT COMMAND…")
    out, command = Path(argv[0]), argv[1:]
    process = subprocess.Popen(command)
    # Ctrl-C reaches the whole process group: the command stops on its own, and this process
    # waits for it to say how it ended. Ignored only once the command has started: an ignored
    # signal stays ignored across exec, and the command would not stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _, status, usage = os.wait4(process.pid, 0)
    out.write_text(str(usage.ru_maxrss))
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code  # a signal, as a shell reports it


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""``python -m bench.rss -- COMMAND ...``: wall time and peak RSS of a command (its largest process).

For end-to-end memory checks, e.g. preparing and training on the MIND-small-scale corpus:
``python -m bench.rss -- python -m nram_core train --data DIR --preset paper --max-steps 50``.
Prints one JSON line; the command's own output passes through to stderr.
"""
from __future__ import annotations

import resource
import subprocess
import sys

from . import common


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: python -m bench.rss -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    done, seconds = common.timed(lambda: subprocess.run(argv, stdout=sys.stderr))
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest child (Linux: KiB)
    common.emit("rss", {"returncode": done.returncode, "seconds": round(seconds, 1),
                        "peak_rss_mb": round(peak_kib / 1024, 1)}, args={"command": " ".join(argv)})
    return done.returncode


if __name__ == "__main__":
    raise SystemExit(main())

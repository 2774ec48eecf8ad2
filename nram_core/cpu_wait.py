"""How torch's CPU threads wait between parallel regions: chosen by the entry points before torch loads.

torch's CPU kernels run on GNU OpenMP (libgomp), whose threads by default spin for about 3 ms after
each parallel region before they sleep. On an idle machine the spin saves a wake-up between two
kernels; on a busy one (a second training job, a laptop's other work) the spinning threads burn the
time slices that the working threads and the other processes need, and a step of many small
kernels pays for it at every one of them: with two other torch processes on the cores, the default
training path lost most of its lead over plain fp32 (the figures: docs/benchmarks.md, "A busy
machine"). libgomp itself cuts its spin to 100 or 1,000 rounds when it knows that its threads
outnumber the cores, but it cannot see other processes; so ``short_spin_wait`` asks for 1,000 rounds
(about 10 us) from the start, which kept the idle speed and the speed-ups on a busy machine.

libgomp reads its settings once, when torch loads it, so only a process that has not imported torch
yet can choose; a user's own ``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY`` is left as it is. The setting
is GNU OpenMP's, which torch's Linux wheels use; another OpenMP runtime (LLVM's or Intel's, as on
macOS) ignores it and keeps its own wait.
"""
from __future__ import annotations

import os
import sys
from typing import MutableMapping

SPIN_COUNT = "GOMP_SPINCOUNT"
WAIT_POLICY = "OMP_WAIT_POLICY"
SHORT_SPIN = 1000  # spin rounds before a waiting thread sleeps; libgomp's default is 300,000


def short_spin_wait(environ: MutableMapping[str, str] | None = None) -> bool:
    """Ask libgomp for its short spin (``GOMP_SPINCOUNT=1000``) in ``environ`` (default ``os.environ``,
    which child processes inherit), unless the user chose a wait already or torch is loaded (then
    the setting could no longer apply to this process). Returns whether it was set.

    >>> short_spin_wait({"OMP_WAIT_POLICY": "active"})  # the user's choice stands
    False
    """
    environ = os.environ if environ is None else environ
    if SPIN_COUNT in environ or WAIT_POLICY in environ or "torch" in sys.modules:
        return False
    environ[SPIN_COUNT] = str(SHORT_SPIN)
    return True


def wait_settings(environ: MutableMapping[str, str] | None = None) -> dict[str, str | None]:
    """The wait settings this process's libgomp read, when it was started with ``environ``: for a
    benchmark's record of the machine.

    >>> wait_settings({"GOMP_SPINCOUNT": "1000"})
    {'GOMP_SPINCOUNT': '1000', 'OMP_WAIT_POLICY': None}
    """
    environ = os.environ if environ is None else environ
    return {SPIN_COUNT: environ.get(SPIN_COUNT), WAIT_POLICY: environ.get(WAIT_POLICY)}

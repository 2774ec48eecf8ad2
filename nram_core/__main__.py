import sys

from .cpu_wait import short_spin_wait

short_spin_wait()  # before anything loads torch: libgomp reads it once

from .cli import main  # noqa: E402

sys.exit(main())

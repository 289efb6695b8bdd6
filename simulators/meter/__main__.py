"""``python -m simulators.meter``: the same as ``fusebox sim meter``."""

from __future__ import annotations

import sys

from simulators.meter._cli import main

sys.exit(main())

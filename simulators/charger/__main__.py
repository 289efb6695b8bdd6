"""``python -m simulators.charger``."""

from __future__ import annotations

import sys

from simulators.charger._cli import main

sys.exit(main())

"""bench/ is not a package: its tests import `shopbench` from the folder above, as bench/run.py does."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

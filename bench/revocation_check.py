"""The revocation check's CPU cost on its own: `uv run python bench/revocation_check.py`.
Needs Redis (REDIS_URL, default redis://127.0.0.1:6379/0); writes bench/results/revocation_check.json.
`make bench` (bench/run.py) runs the same measurement and reports it beside the load scenarios."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from shopbench import revocation

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> int:
    result = revocation.measure(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    (RESULTS / "revocation_check.json").write_text(json.dumps(result, indent=2) + "\n")
    print("\n".join(revocation.markdown(result)))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())

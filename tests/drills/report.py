"""Figures from the reliability and security drills.

Each drill prints its figures and, when WANDO_DRILL_REPORT names a file, also
appends them there as one JSON line, so docs/reliability.md can quote the
latest run."""

from __future__ import annotations

import json
import os
import time
from typing import Any


def report(drill: str, **figures: Any) -> None:
    """Print a drill's figures and append them to $WANDO_DRILL_REPORT if set."""
    line = {"drill": drill, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **figures}
    print(f"\n[drill] {json.dumps(line, sort_keys=True)}")
    target = os.environ.get("WANDO_DRILL_REPORT")
    if target:
        with open(target, "a", encoding="utf-8") as out:
            out.write(json.dumps(line, sort_keys=True) + "\n")


def heavy() -> bool:
    """Heavier drill variants run only with WANDO_HEAVY_DRILLS=1."""
    return os.environ.get("WANDO_HEAVY_DRILLS") == "1"

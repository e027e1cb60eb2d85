"""What a supervised worker and its supervisor agree on (cli.run, cli.supervise)."""

from __future__ import annotations

READY = "ready"  # what a supervised worker writes on its stdout once it serves

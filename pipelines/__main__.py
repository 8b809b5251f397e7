"""``python -m pipelines`` runs the ``medseg`` command line (also under torchrun)."""

from __future__ import annotations

import sys

from pipelines.cli.main import main

if __name__ == "__main__":
    sys.exit(main())

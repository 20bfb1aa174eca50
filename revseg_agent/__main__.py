"""`python -m revseg_agent ...` is `revseg ...` (what `accelerate launch -m` and `torchrun -m` take)."""

from __future__ import annotations

import sys

from revseg_agent.app.cli import main

if __name__ == "__main__":
    sys.exit(main())

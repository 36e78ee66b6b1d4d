"""Starts the hookline server, for older docs that say ``python src/main.py``.

``hookline serve`` and ``python -m hookline serve`` do the same.
"""

import sys
from pathlib import Path

# Let this file work from a checkout even where the package was not installed.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from hookline.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve"]))

"""``python -m pipeline.align align IN OUT``: the same as ``facegan-align``."""
import sys

from pipeline.align.cli import main

sys.exit(main())

"""``python -m studio``: the same as ``facegan-studio``."""
from studio.cli import main

raise SystemExit(main())

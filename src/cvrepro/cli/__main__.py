"""`python -m cvrepro.cli`: what torchrun starts on each worker (the same `cvrepro` commands)."""

import sys

from cvrepro.cli import main

sys.exit(main())

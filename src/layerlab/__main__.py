"""python -m layerlab (and torchrun -m layerlab) runs the command line."""

import sys

from layerlab.cli import main

sys.exit(main())

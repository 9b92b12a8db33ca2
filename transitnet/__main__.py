"""``python -m transitnet`` runs the command-line interface."""

import sys

from transitnet.cli import main

sys.exit(main())

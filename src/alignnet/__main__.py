"""``python -m alignnet``: the same as the ``alignnet`` command."""

import sys

from .cli import main

sys.exit(main())

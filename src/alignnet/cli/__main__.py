"""``python -m alignnet.cli``: the same as ``alignnet`` (kept for scripts written before ``python -m alignnet``)."""

import sys

from . import main

sys.exit(main())

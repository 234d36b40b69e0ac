"""``python -m dkron_exec``: the dkron-exec command."""

import sys

from .cli import main

sys.exit(main())

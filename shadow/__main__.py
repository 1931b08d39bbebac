"""``python -m shadow`` is the ``shadow`` command."""

import sys

from shadow.cli.main import main

sys.exit(main())

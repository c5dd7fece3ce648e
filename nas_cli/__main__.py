"""``python -m nas_cli``: the ``nas`` command."""

import sys

from nas_cli.main import main

sys.exit(main())

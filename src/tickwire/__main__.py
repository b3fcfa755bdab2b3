"""``python -m tickwire`` is the ``tickwire`` command."""

import sys

from tickwire.client.cli import main

sys.exit(main())

"""``python -m tickwire.client.bench``: the load generator without the rest of the CLI."""

import sys

from tickwire.client.bench import main

sys.exit(main())

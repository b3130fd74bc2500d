"""``python -m signserver.registry_dev``: the reference identity registry."""

import sys

from signserver.registry_dev.server import main

raise SystemExit(main(sys.argv[1:]))

"""python -m bionn.config.importer: the same as bionn-import."""

import sys

from bionn.config.importer import main

sys.exit(main())

import sys

from bionn.report.cli import main

sys.exit(main())

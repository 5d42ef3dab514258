"""`python -m batchroute` runs the command line."""

from batchroute.cli import main

raise SystemExit(main())

"""``python -m bitmind.demo`` (``scripts/run_local_demo.sh``): the command line is ``bitmind.cli.demo``."""
import sys

from bitmind.cli.demo import main

if __name__ == "__main__":
    sys.exit(main())

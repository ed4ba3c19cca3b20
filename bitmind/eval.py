"""``python -m bitmind.eval`` (and ``bitmind-eval``): the command line is ``bitmind.cli.eval``."""
import sys

from bitmind.cli.eval import main

if __name__ == "__main__":
    sys.exit(main())

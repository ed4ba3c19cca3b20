"""``python -m bitmind.calibrate``: the command line is ``bitmind.cli.calibrate``."""
import sys

from bitmind.cli.calibrate import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m bitmind.model_info``: the command line is ``bitmind.cli.model_info``."""
import sys

from bitmind.cli.model_info import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m bitmind.ensemble``: the command line is ``bitmind.cli.ensemble``."""
from bitmind.cli.ensemble import main

if __name__ == "__main__":
    main()

"""``python -m bitmind.download_data``, ``python bitmind/download_data.py`` (the design card's
name) and ``bitmind-download-data``: the command line is ``bitmind.cli.download_data``."""
import os
import sys

if __name__ == "__main__" and sys.path:
    # Run as a file, Python puts this file's folder (bitmind/) first on sys.path, where
    # data/, models/, eval.py, cli/, metrics.py ... would shadow top-level modules of the same
    # name for every later import. The package itself is installed, so drop the entry.
    _here = os.path.dirname(os.path.realpath(__file__))
    if os.path.realpath(sys.path[0] or os.getcwd()) == _here:
        sys.path.pop(0)

from bitmind.cli.download_data import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

"""The command lines, apart from the library they drive. Each keeps its old entry point
(``python -m bitmind.<name>``, a thin module that calls ``main`` here):

* ``eval``: score a model file on local data (``bitmind.evaluation``);
* ``calibrate``: re-fit a checkpoint's calibration (``bitmind.calibration``);
* ``ensemble``: write several checkpoints as one (``bitmind.models.ensemble``);
* ``download_data``: fill the Hugging Face cache (also ``python bitmind/download_data.py``);
* ``demo``: a miner on a local chain, queried like a validator.
"""

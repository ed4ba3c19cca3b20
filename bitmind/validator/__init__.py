"""The validator side: challenges, querying miners, rewards, scores, the loop and a local harness.

* ``challenges``: draw real/fake images, apply the validator pipeline, wrap in ``ImageSynapse``.
* ``query``: send a challenge to many axons with a time-out; every outcome becomes a ``MinerResponse``.
* ``rewards``: 1 for a correct rounded prediction, 0 for wrong, missing or invalid answers.
* ``scores``: moving-average scores per UID, normalised weights, atomic save/restore.
* ``chain``: metagraph snapshot and weight setting (real subtensor or the local chain).
* ``core``: the round/epoch loop used by ``neurons/validator.py`` and the harness.
* ``report``: per-miner accuracy / latency / failure table.
* ``config``: the command line of ``neurons/validator.py``.
* ``harness``: N local miners + one validator on loopback (``python -m bitmind.validator.harness``).
"""
from bitmind.validator.rewards import reward, rewards, valid_prediction
from bitmind.validator.scores import ScoreBook

__all__ = ["ScoreBook", "reward", "rewards", "valid_prediction"]

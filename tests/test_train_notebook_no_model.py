"""The training notebook (``base_miner/NPR/train_detector.ipynb``) copes with a run that saved no
model: ``train()``'s summary names no ``best_checkpoint`` then (None: a run that stopped in its
first epoch on a loss that is not a number, or whose validation pictures never read), and the
evaluation cell passed that None to ``evaluate_detailed``, which failed with a traceback about a
path. The cells now say that no model was saved.

The cells run here as the kernel runs them, in one namespace, on a stand-in ``train`` (no kernel,
no training: ``tests/test_notebooks.py`` runs the whole notebook on a real run)."""
from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "base_miner" / "NPR" / "train_detector.ipynb"


def _code_cell(holding: str) -> str:
    """The source of the notebook's one code cell whose source holds ``holding``."""
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    found = ["".join(c["source"]) for c in cells if c["cell_type"] == "code" and holding in "".join(c["source"])]
    assert len(found) == 1, found
    return found[0]


def test_a_run_that_saved_no_model_is_said_so_and_not_evaluated(capsys):
    summary = {"best_checkpoint": None, "best": {}, "history": [], "stopped": "non-finite", "run_dir": "r"}

    def evaluate_detailed(model, *a, **kw):
        raise AssertionError(f"evaluate_detailed was called with {model!r}")

    ns: dict = {}
    exec(_code_cell("# Parameters"), ns)  # the settings, as the notebook's first code cell sets them
    ns.update(TrainConfig=lambda **options: options, train=lambda cfg: summary, evaluate_detailed=evaluate_detailed)
    exec(_code_cell("summary = train(cfg)"), ns)
    trained = capsys.readouterr().out
    assert "no model was saved: non-finite" in trained and "best checkpoint: None" not in trained, trained
    exec(_code_cell("evaluate_detailed("), ns)
    said = capsys.readouterr().out
    assert said.startswith("no model was saved, so there is nothing to evaluate") and "(stopped: non-finite)" in said, said

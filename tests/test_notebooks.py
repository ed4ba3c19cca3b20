"""Both notebooks run top to bottom (nbclient, CPU) on tiny data made here.

Each notebook's first code cell (tagged ``parameters``) holds its settings; the test
inserts a cell right after it that overrides them, as papermill does.
"""
import ast
import json
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

from bitmind.checkpoint import load_model
from bitmind.data import LocalFolderSource, split_indices
from bitmind.evaluation import evaluate_detailed

from eval_helpers import make_textured_folder, save_tiny_npr, textured_image

pytestmark = [pytest.mark.slow]


REPO = Path(__file__).resolve().parents[1]


def _parameter_names(nb) -> tuple[int, set[str]]:
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            tree = ast.parse(cell.source)
            return i, {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets}
    raise AssertionError("notebook has no cell tagged 'parameters'")


def run_notebook(path: Path, overrides: dict, monkeypatch):
    nb = nbformat.read(path, as_version=4)
    i, names = _parameter_names(nb)
    assert set(overrides) <= names, f"not parameters of {path.name}: {set(overrides) - names}"
    cell = nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in overrides.items()))
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(i + 1, cell)
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend renders the figures
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    return nb


def _outputs(nb):
    text, images = [], 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stdout":
                text.append(out["text"])
            data = out.get("data", {})
            if "image/png" in data:
                images += 1
            if "text/plain" in data:
                text.append(data["text/plain"])
    return "".join(text), images


def test_eval_notebook(tmp_path, monkeypatch):
    data = make_textured_folder(tmp_path / "data", per_class=6)
    model = save_tiny_npr(tmp_path / "npr.pth", temperature=1.5)
    nb = run_notebook(REPO / "base_miner" / "eval_detector.ipynb",
                      {"MODEL_PATH": str(model), "DATA_DIRS": [str(data)], "SPLIT": None, "CHALLENGE": True,
                       "SEED": 3, "DEVICE": "cpu", "BATCH_SIZE": 4, "N_MISTAKES": 4}, monkeypatch)
    text, images = _outputs(nb)
    # Same evaluation in this process: the notebook must report exactly these numbers.
    report, preds, _ = evaluate_detailed(model, [data], challenge=True, seed=3, device="cpu", progress=False)
    assert f"{len(preds.mistakes())} mistakes out of 12 images" in text
    assert "overall" in text and f"{report['accuracy']:.4f}" in text
    assert images >= 1 + (1 if preds.mistakes() else 0)  # ROC/scores/confusion figure, then the mistakes
    for m in preds.mistakes(4):
        assert preds.paths[m] in text


def test_train_notebook(tmp_path, monkeypatch):
    data = tmp_path / "data"
    for k in range(24):
        for cls in ("real", "fake"):
            textured_image(data / cls / "s" / f"{cls}{k}.jpg", seed=k + 1000 * (cls == "fake"))
    src = LocalFolderSource(data)

    def has_both_classes(idx):
        return {src.label(i) for i in idx} == {0, 1}

    split_seed = next(s for s in range(100) if all(has_both_classes(split_indices(src, s)[n]) for n in ("val", "test")))
    ckpts = tmp_path / "ckpt"
    nb = run_notebook(REPO / "base_miner" / "NPR" / "train_detector.ipynb",
                      {"DATA_DIR": str(data), "EPOCHS": 2, "BATCH_SIZE": 8, "MAX_STEPS_PER_EPOCH": 2, "LAYERS": [1, 1],
                       "WIDTH": 8, "RUN_NAME": "nbtest", "CHECKPOINTS_DIR": str(ckpts), "DEVICE": "cpu", "WORKERS": 0,
                       "SEED": 0, "SPLIT_SEED": split_seed, "EVAL_SPLIT": "test"}, monkeypatch)
    text, images = _outputs(nb)
    best = ckpts / "nbtest" / "model_epoch_best.pth"
    assert f"best checkpoint: {best}" in text
    assert load_model(best).meta["config"]["width"] == 8
    history = json.loads((ckpts / "nbtest" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1]
    assert text.count("'epoch': ") >= 2  # the per-epoch lines printed under the curves
    n_test = len(split_indices(src, split_seed)["test"])
    overall = [line.split() for line in text.splitlines() if line.startswith("overall")]
    assert f"split 'test' (seed {split_seed})" in text and overall and overall[-1][1] == str(n_test)
    assert images >= 2  # training curves, then ROC and scores

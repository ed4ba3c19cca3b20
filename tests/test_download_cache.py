"""bitmind.download_data on local parquet files: ``datasets`` converts them to an Arrow cache,
which must go where ``--cache_dir`` says, as for hub downloads (before, it always went to the
default cache, ~/.cache/huggingface). No network."""
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import bitmind.cli.download_data as dd
import bitmind.data.sources as sources

REPO = Path(__file__).resolve().parents[1]


def _parquet(path: Path) -> Path:
    """A parquet file of four 16x16 PNGs, two labelled real and two fake."""
    import datasets

    def png(colour):
        buf = io.BytesIO()
        Image.new("RGB", (16, 16), colour).save(buf, format="PNG")
        return {"bytes": buf.getvalue(), "path": None}

    imgs = [png(c) for c in ((255, 0, 0), (250, 0, 0), (0, 0, 255), (0, 0, 250))]
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.Value("string")})
    datasets.Dataset.from_dict({"image": imgs, "label": ["real", "real", "fake", "fake"]}, features=feats).to_parquet(str(path))
    return path


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


@pytest.mark.slow
def test_local_parquet_caches_in_the_given_cache_dir(tmp_path):
    """The real command, in a process of its own (``datasets`` reads its default cache from the
    environment at import): the default cache stays empty, the given one holds the Arrow cache."""
    data = _parquet(tmp_path / "pics.parquet")
    default, given = tmp_path / "hf_home", tmp_path / "given_cache"
    default.mkdir()
    env = {**os.environ, "HF_HOME": str(default), "HF_DATASETS_CACHE": str(default / "datasets"),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    p = subprocess.run([sys.executable, "-m", "bitmind.download_data", "--datasets", str(data), "--verify", "-1",
                        "--cache_dir", str(given)], cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "1 of 1 datasets ready" in p.stdout and "real 2, fake 2" in p.stdout
    assert _files(default) == [], f"written to the default cache: {_files(default)}"
    assert any(f.suffix == ".arrow" for f in _files(given)), _files(given)


@pytest.mark.parametrize("given", [True, False])
def test_local_datasets_are_opened_with_the_cache_dir_of_hub_downloads(tmp_path, monkeypatch, given):
    """Both the label check and the summary open the local data with ``--cache_dir``; without it,
    with None (the library default), exactly as ``download_one`` passes it to the hub."""
    monkeypatch.delenv("HF_DATASETS_CACHE", raising=False)  # the default of --cache_dir
    data = _parquet(tmp_path / "pics.parquet")
    seen = []
    real_open = sources.open_hf_dataset

    def spy(path, split="train", cache_dir=None):
        seen.append(cache_dir)
        return real_open(path, split=split, cache_dir=str(tmp_path / "spy_cache"))  # never the user's default cache

    monkeypatch.setattr(sources, "open_hf_dataset", spy)
    cache = str(tmp_path / "c")
    assert dd.main(["--datasets", str(data), *(["--cache_dir", cache] if given else [])]) == 0
    assert seen == [cache if given else None] * 2  # label_problem, then summarise_local

"""bitmind.download_data (bitmind.cli.download_data): retries with backoff, per-dataset errors, local sources;
bitmind.data.catalog; HFDatasetSource on a dataset saved to disk here. No network."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import bitmind.cli.download_data as dd
from bitmind.data import HFDatasetSource, open_source
from bitmind.data.catalog import CATALOG, find_entry

REPO = Path(__file__).resolve().parents[1]
NO_WAIT = dd.RetryPolicy(max_attempts=4, initial_wait=1.0, factor=2.0, max_wait=100.0, jitter=0.0)


@pytest.fixture(autouse=True)
def online_mode(monkeypatch):
    # Offline mode disables retries by design; these tests are about the online logic.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)


class FakeHub:
    """Stands in for datasets.load_dataset: fails as told per dataset, then succeeds."""

    def __init__(self, failures: dict[str, list[BaseException]]):
        self.failures = {k: list(v) for k, v in failures.items()}
        self.calls: list[tuple[str, dict]] = []

    def __call__(self, path, **kwargs):
        self.calls.append((path, kwargs))
        pending = self.failures.get(path)
        if pending:
            exc = pending[0] if len(pending) == 1 and pending[0] is ALWAYS else pending.pop(0)
            raise (exc.exc if exc is ALWAYS else exc)
        import datasets

        return datasets.DatasetDict({"train": datasets.Dataset.from_dict({"image": [None, None, None]})})


class _Always:
    exc: BaseException = ConnectionError("Couldn't reach the Hub")


ALWAYS = _Always()


def _patch_hub(monkeypatch, failures):
    import datasets

    hub = FakeHub(failures)
    monkeypatch.setattr(datasets, "load_dataset", hub)
    return hub


def _target(name):
    return dd.parse_target(name)


def test_timeouts_are_retried_with_exponential_backoff(monkeypatch):
    hub = _patch_hub(monkeypatch, {"bitmind/ffhq-256": [TimeoutError("read timed out"), TimeoutError("read timed out")]})
    sleeps = []
    out = dd.download_one(_target("ffhq-256"), cache_dir="/tmp/cache", policy=NO_WAIT, sleep=sleeps.append, log=lambda m: None)
    assert out.ok and out.attempts == 3 and out.summary == {"splits": {"train": 3}}
    assert sleeps == [1.0, 2.0]
    assert [c[0] for c in hub.calls] == ["bitmind/ffhq-256"] * 3
    assert hub.calls[0][1] == {"cache_dir": "/tmp/cache", "download_mode": "reuse_dataset_if_exists"}


def test_persistent_failure_names_the_dataset(monkeypatch):
    _patch_hub(monkeypatch, {"bitmind/JourneyDB": [ALWAYS]})
    sleeps = []
    out = dd.download_one(_target("bitmind/JourneyDB"), policy=NO_WAIT, sleep=sleeps.append, log=lambda m: None)
    assert not out.ok and out.attempts == 4
    assert "bitmind/JourneyDB" in out.error and "after 4 attempts" in out.error and "ConnectionError" in out.error
    assert sleeps == [1.0, 2.0, 4.0]


def test_permanent_errors_are_not_retried(monkeypatch):
    _patch_hub(monkeypatch, {"someone/missing": [FileNotFoundError("Dataset 'someone/missing' doesn't exist on the Hub")]})
    sleeps = []
    out = dd.download_one(_target("someone/missing"), policy=NO_WAIT, sleep=sleeps.append, log=lambda m: None)
    assert not out.ok and out.attempts == 1 and sleeps == [] and "someone/missing" in out.error


class HTTPError(Exception):
    def __init__(self, code, headers=None):
        super().__init__(f"HTTP {code}")
        self.response = type("R", (), {"status_code": code, "headers": headers or {}})()


def test_transient_classification():
    assert dd.is_transient(HTTPError(429))
    assert dd.is_transient(HTTPError(503))
    assert not dd.is_transient(HTTPError(404))
    assert not dd.is_transient(HTTPError(401))
    assert dd.is_transient(TimeoutError())
    assert dd.is_transient(ConnectionResetError())
    assert not dd.is_transient(ValueError("bad config"))
    wrapped = RuntimeError("while loading")
    wrapped.__cause__ = HTTPError(429)
    assert dd.is_transient(wrapped)  # the cause decides
    assert dd.is_transient(RuntimeError("429 Client Error: Too Many Requests"))


def test_offline_mode_does_not_retry(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not dd.is_transient(TimeoutError())


def test_retry_after_header_lengthens_the_wait():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise HTTPError(429, {"Retry-After": "30"})
        return "done"

    sleeps = []
    assert dd.call_with_retries(flaky, "x", NO_WAIT, sleep=sleeps.append, log=lambda m: None) == ("done", 2)
    assert sleeps == [30.0]


def test_backoff_is_capped_and_jittered():
    p = dd.RetryPolicy(initial_wait=10, factor=2, max_wait=60, jitter=0.1)
    import random

    rng = random.Random(0)
    waits = [p.wait(k, rng) for k in range(1, 7)]
    assert 10 <= waits[0] <= 11 and 20 <= waits[1] <= 22 and 40 <= waits[2] <= 44
    assert all(60 <= w <= 66 for w in waits[3:])


def test_main_continues_after_a_failure_and_exits_nonzero(monkeypatch, capsys, tmp_path):
    hub = _patch_hub(monkeypatch, {"bitmind/celeb-a-hq": [ALWAYS]})
    monkeypatch.setattr(dd.time, "sleep", lambda s: None)
    rc = dd.main(["--datasets", "celeb-a-hq", "realvis-xl", "--cache_dir", str(tmp_path / "c"), "--force_redownload",
                  "--max_retries", "2", "--initial_wait", "0", "--json", str(tmp_path / "o.json")])
    assert rc == 1
    err = capsys.readouterr().err
    assert "could not download bitmind/celeb-a-hq after 2 attempts" in err
    assert "failed: bitmind/celeb-a-hq" in err
    assert [c[0] for c in hub.calls] == ["bitmind/celeb-a-hq"] * 2 + ["bitmind/realvis-xl"]
    assert all(c[1]["download_mode"] == "force_redownload" and c[1]["cache_dir"] == str(tmp_path / "c") for c in hub.calls)
    outcomes = {o["name"]: o for o in json.loads((tmp_path / "o.json").read_text())}
    assert outcomes["bitmind/realvis-xl"]["ok"] and outcomes["bitmind/realvis-xl"]["role"] == "fake"
    assert not outcomes["bitmind/celeb-a-hq"]["ok"]


def test_an_output_path_that_cannot_be_written_stops_before_any_download(monkeypatch, capsys, tmp_path):
    """``--json DIR`` was an IsADirectoryError after every download, ``--cache_dir FILE`` a
    FileExistsError traceback; both are one line now, before the first download."""
    hub = _patch_hub(monkeypatch, {})
    afile = tmp_path / "f"
    afile.write_text("x")
    assert dd.main(["--datasets", "celeb-a-hq", "--json", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert dd.main(["--datasets", "celeb-a-hq", "--cache_dir", str(afile)]) == 2
    assert "is a file" in capsys.readouterr().err
    assert hub.calls == []


def test_main_downloads_whole_catalog_by_default(monkeypatch):
    hub = _patch_hub(monkeypatch, {})
    assert dd.main(["--role", "real"]) == 0
    assert [c[0] for c in hub.calls] == [e.path for e in CATALOG if e.role == "real"]


def test_catalog():
    assert {e.role for e in CATALOG} == {"real", "fake"}
    assert len({e.path for e in CATALOG}) == len(CATALOG)
    assert find_entry("FFHQ-256").path == "bitmind/ffhq-256" and find_entry("bitmind/JourneyDB").role == "fake"
    assert find_entry("nope") is None
    t = dd.parse_target("bitmind/realvis-xl")
    assert not t.local and t.role == "fake" and t.entry is find_entry("realvis-xl")
    assert dd.parse_target("some/other:real").role == "real"


# --------------------------------------------------------------------------- local sources


def _save_hf_dataset(path: Path, n: int = 5, with_label: bool = False) -> Path:
    import datasets

    imgs = [Image.new("RGB", (24 + k, 20), (40 * k, 10, 200 - 30 * k)) for k in range(n)]
    cols = {"image": imgs, "id": [f"pic{k}" for k in range(n)]}
    feats = {"image": datasets.Image(), "id": datasets.Value("string")}
    if with_label:
        cols["label"] = [k % 2 for k in range(n)]
        feats["label"] = datasets.Value("int64")
    datasets.Dataset.from_dict(cols, features=datasets.Features(feats)).save_to_disk(str(path))
    return path


def test_hf_dataset_on_disk_through_hfdatasetsource(tmp_path):
    path = _save_hf_dataset(tmp_path / "fakes", n=5)
    src = HFDatasetSource(str(path), role="fake", id_column="id")
    assert len(src) == 5 and src.name == "fakes"
    assert [src.label(i) for i in range(5)] == [1] * 5
    assert src.source_name(0) == "fake/fakes" and src.stem(3) == "pic3"
    img = src.load(2)
    assert img.mode == "RGB" and img.size == (26, 20) and img.getpixel((0, 0)) == (80, 10, 140)
    labelled = HFDatasetSource(str(_save_hf_dataset(tmp_path / "mixed", n=4, with_label=True)), role=None, label_column="label")
    assert [labelled.label(i) for i in range(4)] == [0, 1, 0, 1]
    assert open_source(f"hf:{path}:real").label(0) == 0


def test_local_hf_dataset_is_summarised_not_downloaded(monkeypatch, tmp_path, capsys):
    hub = _patch_hub(monkeypatch, {})
    path = _save_hf_dataset(tmp_path / "reals", n=5)
    assert dd.main(["--datasets", f"{path}:real", "--json", str(tmp_path / "o.json")]) == 0
    assert hub.calls == []
    (o,) = json.loads((tmp_path / "o.json").read_text())
    assert o["kind"] == "local" and o["role"] == "real" and o["ok"]
    assert o["summary"]["n"] == 5 and o["summary"]["n_real"] == 5 and o["summary"]["per_source"] == {"real/reals": 5}
    assert o["summary"]["format"] == "hf" and o["summary"]["checked"] == 5 and o["summary"]["unreadable"] == 0
    assert "5 images" in capsys.readouterr().out


def test_local_folder_is_validated(tmp_path):
    root = tmp_path / "pool"
    for cls in ("real", "fake"):
        for k in range(3):
            (root / cls / "src").mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (16, 16), (k * 50, 0, 0)).save(root / cls / "src" / f"{cls}{k}.jpg")
    (root / "fake" / "src" / "zz_bad.jpg").write_bytes(b"garbage")
    o = dd.summarise_local(dd.parse_target(str(root)), verify=-1)
    assert o.ok and o.summary["format"] == "folder"
    assert o.summary["n"] == 7 and o.summary["n_real"] == 3 and o.summary["n_fake"] == 4
    assert o.summary["unreadable"] == 1 and any("zz_bad.jpg" in w for w in o.warnings)
    # A folder without the real/fake layout, and a path that does not exist: clear errors.
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "flat" / "a.jpg")
    bad = dd.summarise_local(dd.parse_target(str(tmp_path / "flat")))
    assert not bad.ok and str(tmp_path / "flat") in bad.error
    gone = dd.summarise_local(dd.parse_target(str(tmp_path / "gone")))
    assert not gone.ok and "gone" in gone.error


def test_runs_as_a_file_and_as_a_module(tmp_path):
    path = _save_hf_dataset(tmp_path / "reals", n=3)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for args in (["bitmind/download_data.py"], ["-m", "bitmind.download_data"]):
        p = subprocess.run([sys.executable, *args, "--datasets", f"{path}:real"], cwd=REPO, capture_output=True,
                           text=True, env=env, timeout=300)
        assert p.returncode == 0, p.stderr
        assert "1 of 1 datasets ready" in p.stdout


def test_list_prints_the_catalog(capsys):
    assert dd.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert all(e.path in out for e in CATALOG)


def _pictures(folder: Path, n: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        Image.new("RGB", (16, 16), (40 * k, 90, 160)).save(folder / f"p{k}.png")
    return folder


def test_a_folder_of_pictures_with_a_role_is_checked_as_training_reads_it(tmp_path):
    """``hf:PATH:fake`` trains and evaluates on a plain folder of pictures, while
    ``download_data --datasets PATH:fake`` refused it as "neither an image folder ... nor a
    Hugging Face dataset" (operator review); without a role it is told to give one."""
    flat = _pictures(tmp_path / "my_fakes")
    o = dd.summarise_local(dd.parse_target(f"{flat}:fake"))
    assert o.ok and o.summary["n_fake"] == 3 and o.summary["n_real"] == 0, o.error
    bare = dd.summarise_local(dd.parse_target(str(flat)))
    assert not bare.ok and f"{flat}:real or {flat}:fake" in bare.error


def test_a_role_given_to_a_class_folder_layout_is_said_to_be_ignored(tmp_path):
    root = tmp_path / "cs"
    _pictures(root / "fake" / "gen")
    o = dd.summarise_local(dd.parse_target(f"{root}:real"))
    assert o.ok and o.summary["n_fake"] == 3  # the folders decide
    assert any(":real is ignored" in w for w in o.warnings)

"""The operator's models live beside the shipped ones without blocking a ``git pull``
(README, steps 4 and 7): the miner serves the link ``mining_models/local/current.pth``, the
folder is ignored by git, and the README's own commands make and re-point the link."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bitmind.miner.config import resolve_model_path

REPO = Path(__file__).resolve().parents[1]
LINK = "mining_models/local/current.pth"


def _readme_commands(step: str) -> list[str]:
    """The bash lines of the README's numbered step ``step`` (its first code block)."""
    text = (REPO / "README.md").read_text()
    m = re.search(rf"^{step}\. \*\*.*?```bash\n(.*?)```", text, re.M | re.S)
    assert m, f"README step {step} lost its commands"
    return [line.strip() for line in m.group(1).splitlines() if line.strip()]


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="needs git and a checkout")
def test_the_operators_model_folder_is_ignored_and_the_shipped_file_is_not():
    def ignored(path: str) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO).returncode == 0

    assert ignored(LINK) and ignored("mining_models/local/v1.pth")
    assert not ignored("mining_models/base.pth")


def test_the_guides_miner_serves_the_link_and_the_readme_makes_and_repoints_it(tmp_path):
    assert f"--neuron.model_path ./{LINK}" in (REPO / "README.md").read_text()
    assert f'"./{LINK}"' in (REPO / "ecosystem.config.js").read_text()
    (tmp_path / "mining_models").mkdir()
    (tmp_path / "mining_models" / "base.pth").write_bytes(b"shipped")
    ckpt = tmp_path / "base_miner" / "checkpoints" / "run1"
    ckpt.mkdir(parents=True)
    (ckpt / "model_epoch_best.pth").write_bytes(b"mine")

    def run(lines):
        for line in lines:
            if line.startswith("python "):  # model_info: checked elsewhere
                continue
            subprocess.run(["bash", "-ec", line.replace("<name>", "run1")], cwd=tmp_path, check=True)

    run(_readme_commands("4"))
    link = tmp_path / LINK
    assert link.is_symlink() and link.read_bytes() == b"shipped"
    served = resolve_model_path(f"./{LINK}", tmp_path)
    assert served.is_symlink()  # the miner watches the link, so re-pointing it is a hot reload
    run(_readme_commands("7"))
    assert link.is_symlink() and link.read_bytes() == b"mine"
    assert (tmp_path / "mining_models" / "base.pth").read_bytes() == b"shipped"  # the tracked file untouched


def test_a_missing_or_dangling_served_link_says_how_to_mend_it(tmp_path):
    from bitmind.miner.config import MAKE_SERVED_LINK, missing_model_message

    link = tmp_path / LINK
    not_made = missing_model_message(link, f"./{LINK}")
    assert MAKE_SERVED_LINK in not_made and "step 4" in not_made
    assert MAKE_SERVED_LINK in (REPO / "README.md").read_text()  # the command the message gives is the guide's
    link.parent.mkdir(parents=True)
    link.symlink_to("mining_models/base.pth")  # made from the wrong folder: relative to the link's own folder
    dangling = missing_model_message(link, f"./{LINK}")
    assert "is a link to mining_models/base.pth, which does not exist" in dangling and "ln -sfn ../base.pth" in dangling
    other = missing_model_message(tmp_path / "x.pth", "x.pth")
    assert "Train one" in other and "ln -sfn" not in other

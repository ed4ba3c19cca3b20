"""The README's demo, end to end: neurons/miner.py runs as its own process on the local
chain, a validator-signed bt.Dendrite query gets the same answer as the model locally,
and SIGTERM stops the miner cleanly."""
import re

import pytest

from bitmind.cli import demo


@pytest.mark.slow
@pytest.mark.process
def test_demo_runs_miner_process_and_gets_an_answer(tmp_path, tiny_model, image_factory, capsys,
                                                    reopen_session_chain):
    image = tmp_path / "challenge.png"
    image_factory(size=120, seed=11).save(image)
    code = demo.main(["--model", str(tiny_model), "--image", str(image), "--root", str(tmp_path / "chain")])
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    remote = float(re.search(r"miner answered prediction=([0-9.]+) \(status 200", out.out).group(1))
    local = float(re.search(r"locally: ([0-9.]+)", out.out).group(1))
    assert 0.0 <= remote <= 1.0 and abs(remote - local) < 1e-5
    assert "miner stopped (exit status 0)" in out.out
    log = (tmp_path / "chain" / "miner.log").read_text()
    assert "requests" in log and "miner stopped" in log


"""``python -m bitmind.local_chain setup|show``: an operator prepares a local chain for a
``--mock`` miner and their own client without writing Python."""
import json
import os
import subprocess
import sys

import bittensor as bt
import pytest

from bitmind import local_chain

pytestmark = pytest.mark.usefixtures("reopen_session_chain")


def _show(root, capsys, *extra) -> dict:
    assert local_chain.main(["show", str(root), "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_setup_registers_wallets_and_show_reports_them(tmp_path, capsys):
    root = tmp_path / "chain"
    assert local_chain.main(["setup", str(root), "--netuid", "7", "--miners", "m1", "m2", "--validators", "v",
                             "--validator_stake", "250", "--block_time", "0"]) == 0
    out = capsys.readouterr().out
    assert "python neurons/miner.py --mock --local.root" in out and "--netuid 7 --wallet.name m1" in out
    state = _show(root, capsys)
    rows = state["subnets"]["7"]
    assert [(r["uid"], r["name"], r["stake"], r["validator_permit"], r["axon"]) for r in rows] == [
        (0, "m1/default", 0.0, False, None), (1, "m2/default", 0.0, False, None), (2, "v/default", 250.0, True, None)]
    # The hotkeys are those of the wallets written under ROOT/wallets.
    for r in rows:
        w = bt.Wallet(name=r["name"].split("/")[0], hotkey="default", path=str(root / "wallets"))
        assert w.hotkey.ss58_address == r["hotkey"] and w.coldkeypub.ss58_address == r["coldkey"]

    # A miner serving its axon shows up; running setup again keeps every UID.
    chain = local_chain.open_local_chain(root, 7, block_time=0)
    port = local_chain.free_port()
    miner = local_chain.local_wallet(root, "m2")
    assert chain.serve_axon(7, bt.Axon(wallet=miner, ip="127.0.0.1", external_ip="127.0.0.1", port=port)).success
    assert local_chain.main(["setup", str(root), "--netuid", "7", "--miners", "m1", "m2", "--validators", "v",
                             "--validator_stake", "250", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)["subnets"]["7"]
    assert [(r["uid"], r["hotkey"]) for r in again] == [(r["uid"], r["hotkey"]) for r in rows]
    assert again[1]["axon"] == f"127.0.0.1:{port}" and again[0]["axon"] is None

    # The table form says the same.
    assert local_chain.main(["show", str(root)]) == 0
    table = capsys.readouterr().out
    assert "netuid 7: 3 neuron(s)" in table and f"127.0.0.1:{port}" in table and rows[2]["hotkey"] in table


def test_show_reads_without_changing_the_chain(tmp_path, capsys):
    root = tmp_path / "chain"
    assert local_chain.main(["setup", str(root), "--netuid", "3", "--json"]) == 0
    capsys.readouterr()
    before = (root / "chain.json").read_bytes()
    state = _show(root, capsys, "--netuid", "3")
    assert [r["name"] for r in state["subnets"]["3"]] == ["miner/default", "validator/default"]
    assert (root / "chain.json").read_bytes() == before
    assert local_chain.main(["show", str(root), "--netuid", "9"]) == 2
    assert "netuid 9 does not exist" in capsys.readouterr().err
    assert local_chain.main(["show", str(tmp_path / "nothing")]) == 2
    assert "no local chain" in capsys.readouterr().err
    assert not (tmp_path / "nothing").exists()


def test_setup_refuses_a_name_in_both_roles(tmp_path, capsys):
    assert local_chain.main(["setup", str(tmp_path / "c"), "--miners", "x", "--validators", "x"]) == 2
    assert "both miner and validator" in capsys.readouterr().err


def test_module_runs_as_a_command(tmp_path):
    root = tmp_path / "chain"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    p = subprocess.run([sys.executable, "-m", "bitmind.local_chain", "setup", str(root)], capture_output=True,
                       text=True, env=env, timeout=300, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    p = subprocess.run([sys.executable, "-m", "bitmind.local_chain", "show", str(root), "--json"], capture_output=True,
                       text=True, env=env, timeout=300, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout)["subnets"]["34"]  # the miner's default netuid
    assert [(r["name"], r["validator_permit"], r["stake"]) for r in rows] == [
        ("miner/default", False, 0.0), ("validator/default", True, 1000.0)]

"""The miner's command line: the documented pm2 invocation parses as intended, switches
can be turned off, typos are errors, and the model path falls back to the repository."""
import json
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bitmind.miner.config import DEFAULT_MODEL_PATH, miner_config, resolve_model_path

PM2_ARGS = ("--neuron.model_path ./mining_models/local/current.pth --netuid 168 --subtensor.network test "
            "--wallet.name default --wallet.hotkey default --axon.port 8091")
REPO_ROOT = Path(__file__).resolve().parents[1]


def test_documented_pm2_command_line():
    c = miner_config(shlex.split(PM2_ARGS))
    assert c.netuid == 168 and c.subtensor.network == "test" and c.axon.port == 8091
    assert (c.wallet.name, c.wallet.hotkey) == ("default", "default")
    assert c.neuron.model_path == "./mining_models/local/current.pth"
    assert c.blacklist.force_validator_permit is True and c.blacklist.allow_non_registered is False
    assert c.mock is False


def test_readme_and_docs_show_the_same_pm2_command():
    line = f"pm2 start ./neurons/miner.py --name miner --interpreter python3 -- {PM2_ARGS}"
    for doc in ("README.md", "docs/Mining.md"):
        text = (REPO_ROOT / doc).read_text()
        assert line in " ".join(text.split()), f"{doc} lacks the documented pm2 command"


def test_defaults_and_switches():
    c = miner_config([])
    assert c.netuid == 34 and c.neuron.model_path == DEFAULT_MODEL_PATH and c.neuron.device == "auto"
    assert c.neuron.amp == "auto" and miner_config(["--neuron.amp", "none"]).neuron.amp == "none"
    assert c.neuron.compile is False and miner_config(["--neuron.compile"]).neuron.compile is True
    c = miner_config(["--blacklist.force_validator_permit", "false", "--blacklist.allow_non_registered", "--mock"])
    assert c.blacklist.force_validator_permit is False and c.blacklist.allow_non_registered is True and c.mock
    c = miner_config(["--local", "--blacklist.force_validator_permit"])
    assert c.mock and c.blacklist.force_validator_permit is True


@pytest.mark.parametrize("bad", [["--neuron.modelpath", "x"], ["--blacklist.force_validator_permit", "maybe"],
                                 ["--netuid", "thirty-four"], ["--neuron.amp", "fp8"],
                                 # 0 made the overload guard's queue unbounded; 0 or below made the
                                 # sync / status loop spin every second; a negative batch skipped --neuron.compile
                                 ["--neuron.max_queue", "0"], ["--neuron.max_queue", "-1"],
                                 ["--neuron.sync_interval", "0"], ["--neuron.status_interval", "-1"],
                                 ["--neuron.max_batch", "-3"], ["--neuron.batch_window_ms", "-1"],
                                 ["--neuron.sync_interval", "inf"]])
def test_bad_arguments_are_errors(bad, capsys):
    with pytest.raises(SystemExit) as e:
        miner_config(bad)
    assert e.value.code == 2 and bad[0] in capsys.readouterr().err


def test_limits_at_their_edges_parse():
    c = miner_config(["--neuron.max_queue", "1", "--neuron.max_batch", "0", "--neuron.batch_window_ms", "0",
                      "--neuron.sync_interval", "0.5"])
    assert (c.neuron.max_queue, c.neuron.max_batch, c.neuron.batch_window_ms, c.neuron.sync_interval) == (1, 0, 0.0, 0.5)


@pytest.mark.parametrize("argv, says, never", [
    ([], "btcli s register --netuid 34 --wallet.name default --wallet.hotkey default", "--subtensor.network"),
    (["--netuid", "168"], "--netuid 168 --wallet.name default --wallet.hotkey default --subtensor.network test", "--wallet.path"),
    # the hint named neither the network nor the wallet folder: it registered on the main network
    (["--subtensor.network", "test", "--wallet.path", "/srv/w", "--wallet.name", "nobody"],
     "--netuid 34 --wallet.name nobody --wallet.hotkey default --wallet.path /srv/w --subtensor.network test", None),
    (["--wallet.path", "/srv/my wallets"], "--wallet.path '/srv/my wallets'", None),
])
def test_the_register_hint_names_the_network_and_wallet_the_neuron_uses(argv, says, never, monkeypatch):
    from bitmind.common import register_command

    for var in ("BT_WALLET_PATH", "BT_WALLET_NAME", "BT_WALLET_HOTKEY", "BT_SUBTENSOR_NETWORK", "BT_CHAIN_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)  # the defaults, not this machine's environment

    c = miner_config(argv)
    hint = register_command(c, c.netuid)
    assert says in hint and (never is None or never not in hint)


def test_model_path_resolution(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "mining_models").mkdir(parents=True)
    (repo / "mining_models" / "base.pth").write_bytes(b"x")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    # not under the current folder -> found under the repository root
    assert resolve_model_path("./mining_models/base.pth", repo) == (repo / "mining_models" / "base.pth").resolve()
    # present under the current folder -> that one wins
    (elsewhere / "mining_models").mkdir()
    (elsewhere / "mining_models" / "base.pth").write_bytes(b"y")
    assert resolve_model_path("./mining_models/base.pth", repo) == (elsewhere / "mining_models" / "base.pth").resolve()
    # absolute paths are kept; missing relative paths stay relative to the current folder
    assert resolve_model_path(str(repo / "x.pth"), repo) == (repo / "x.pth").resolve()
    assert resolve_model_path("nope.pth", repo) == (elsewhere / "nope.pth").resolve()


@pytest.mark.parametrize("device", ["cdua", "cuda:7"])
def test_a_device_the_machine_lacks_is_a_configuration_error_not_a_chain_outage(device, tiny_model, tmp_path):
    """`--neuron.device cuda` without a GPU (or a typo) was reported as "miner setup failed on the
    local chain (...); is the endpoint reachable?" with exit status 1, which pm2 restarts forever.
    Now one line naming the option, exit 2 (not restarted), before any chain set-up."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "neurons/miner.py", "--mock", "--local.root", str(tmp_path / "chain"),
                        "--neuron.model_path", str(tiny_model), "--neuron.device", device, "--logging.logging_dir",
                        str(tmp_path / "logs")], capture_output=True, text=True, cwd=repo, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 2, out
    assert f"--neuron.device '{device}'" in out and "endpoint reachable" not in out
    assert "--device" not in out.replace("--neuron.device", "")  # the hint names the miner's own flag too
    assert not (tmp_path / "chain").exists()  # the chain was never touched


def test_a_folder_as_the_model_path_is_named_a_folder(tmp_path):
    """`--neuron.model_path` naming a folder (a run folder, the data root) said "model file not
    found" although the path exists; now it says it is a folder, as bitmind.eval does; exit 2."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "neurons/miner.py", "--mock", "--local.root", str(tmp_path / "chain"),
                        "--neuron.model_path", str(tmp_path), "--logging.logging_dir", str(tmp_path / "logs")],
                       capture_output=True, text=True, cwd=repo, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 2, out
    assert "is a folder, not a model file" in out and "not found" not in out


CHAIN_CASES = [
    ([], "wss://entrypoint-finney.opentensor.ai:443", "finney"),
    (["--subtensor.network", "test"], "wss://test.finney.opentensor.ai:443", "test"),
    # an endpoint alone was ignored: bittensor's network default (finney) won and the neuron
    # went to the main network instead of the operator's own node
    (["--subtensor.chain_endpoint", "ws://10.0.0.5:9944"], "ws://10.0.0.5:9944", "unknown"),
    (["--subtensor.network", "test", "--subtensor.chain_endpoint", "ws://127.0.0.1:9946"], "ws://127.0.0.1:9946", "local"),
    # given, though it is the default's value: still the chain connected to
    (["--subtensor.network", "test", "--subtensor.chain_endpoint", "wss://entrypoint-finney.opentensor.ai:443"],
     "wss://entrypoint-finney.opentensor.ai:443", "finney"),
    (["--subtensor.chain", "ws://10.0.0.5:9944"], "ws://10.0.0.5:9944", "unknown"),  # argparse's abbreviation
]


def test_a_chain_endpoint_on_the_command_line_is_the_chain_connected_to():
    """In a process of its own with no BT_* variables: bittensor reads them into its defaults
    when it is imported, so this process's environment would change what the defaults are."""
    code = textwrap.dedent("""
        import json, sys
        import bittensor as bt
        from bitmind.common import register_command
        from bitmind.miner.config import miner_config
        from bitmind.validator.config import validator_config
        out = []
        for argv in json.loads(sys.argv[1]):
            for config in (miner_config(argv), validator_config(argv + ["--neuron.data", "x"])):
                out.append([list(bt.Subtensor.setup_config(None, config)), register_command(config, 34)])
        print(json.dumps(out))
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BT_")}
    res = subprocess.run([sys.executable, "-c", code, json.dumps([argv for argv, _, _ in CHAIN_CASES])],
                         capture_output=True, text=True, timeout=120, env=env, cwd=REPO_ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    for i, (argv, endpoint, network) in enumerate(CHAIN_CASES):
        for (connects, hint) in got[2 * i: 2 * i + 2]:  # the miner's and the validator's
            assert connects == [endpoint, network], argv  # what bt.Subtensor(config=) connects to
            if any(a.startswith("--subtensor.chain") for a in argv):  # and registration is pointed at the same chain
                assert f"--subtensor.network {endpoint}" in hint, (argv, hint)


@pytest.mark.parametrize("argv, folder", [  # each names its network: the default comes from BT_SUBTENSOR_NETWORK
    (["--subtensor.network", "test"], "test"),
    # named as before endpoints were honoured, so saved scores are found again
    (["--subtensor.network", "test", "--subtensor.chain_endpoint", "wss://test.finney.opentensor.ai:443"], "test"),
    (["--subtensor.network", "local", "--subtensor.chain_endpoint", "ws://127.0.0.1:9944"], "local"),
    (["--subtensor.network", "finney", "--subtensor.chain_endpoint", "ws://node:9944"], "finney"),
    (["--subtensor.chain_endpoint", "ws://10.0.0.5:9944"], "ws_10.0.0.5_9944"),  # a URL is no folder name
])
def test_a_validator_keeps_its_state_in_one_folder_per_chain(argv, folder):
    from bitmind.validator.config import network_state_dir, validator_config

    path = network_state_dir(validator_config(["--neuron.data", "x", *argv]))
    assert path.name == folder and path.parent.name == "validator"

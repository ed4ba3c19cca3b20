"""The miner run the way the operator's guide runs it: through pm2 and the shipped
``ecosystem.config.js``, on a local chain made with ``python -m bitmind.local_chain
setup``, with a pm2 daemon of its own (``PM2_HOME`` in a temporary folder).

A validator-signed ``bt.Dendrite`` query gets the same answer as the model locally,
before and after ``pm2 restart``; ``pm2 delete`` stops the miner. The pm2 daemon is
killed and the temporary folders removed whatever happens. Skipped only where pm2 is not
on PATH (``bash install_system_deps.sh`` installs it); ``.ci/run`` sets
``BITMIND_REQUIRE_PM2=1``, which turns that skip into a failure.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest


from bitmind import local_chain

pytestmark = [pytest.mark.slow, pytest.mark.process]

REPO = Path(__file__).resolve().parents[1]
ECOSYSTEM = REPO / "ecosystem.config.js"
NETUID = 34
PM2_TIMEOUT = 60.0  # one pm2 command
SERVE_TIMEOUT = 120.0  # the miner process up and serving (imports torch and bittensor on a 2-core box)


def _require_pm2() -> str:
    pm2 = shutil.which("pm2")
    if pm2 is None or shutil.which("node") is None:
        reason = "pm2 (and node) not on PATH; `bash install_system_deps.sh` installs them"
        if os.environ.get("BITMIND_REQUIRE_PM2") == "1":
            pytest.fail(reason + " (BITMIND_REQUIRE_PM2=1: this test must run)")
        pytest.skip(reason)
    return pm2


def _node_json(expr_file: Path) -> dict:
    """What node sees when it loads an ecosystem file (the real JavaScript, not a parse of it)."""
    p = subprocess.run(["node", "-e", "console.log(JSON.stringify(require(process.argv[1])))", str(expr_file)],
                       capture_output=True, text=True, timeout=PM2_TIMEOUT)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def _guide_miner_args() -> list[str]:
    """The miner options of the README's long `pm2 start ./neurons/miner.py ...` line."""
    m = re.search(r"^\s*pm2 start \./neurons/miner\.py --name miner --interpreter python3 -- (.+)$",
                  (REPO / "README.md").read_text(), re.M)
    assert m, "README.md lost its pm2 start line"
    return m.group(1).split()


def _alive(pid: int, marker: str) -> bool:
    """Whether ``pid`` still runs a command line containing ``marker`` (never a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return marker in cmdline and "\nState:\tZ" not in status


class Pm2:
    """pm2 commands against the daemon of one PM2_HOME."""

    def __init__(self, home: Path, env: dict):
        self.home, self.env = home, env

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        p = subprocess.run(["pm2", *args], env=self.env, capture_output=True, text=True, timeout=PM2_TIMEOUT)
        if check:
            assert p.returncode == 0, f"pm2 {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
        return p

    def apps(self) -> list[dict]:
        out = self("jlist").stdout
        return json.loads(out[out.index("["):])  # the JSON list (skip any banner before it)

    def app(self, name: str) -> dict | None:
        return next((a for a in self.apps() if a["name"] == name), None)


class Pm2Process:
    """The ``poll()``/``returncode`` of ``subprocess.Popen`` that ``local_chain.wait_for_axon`` checks,
    answered from pm2: still running while pm2 says online/launching without restarting
    it more often than ``restarts``."""

    def __init__(self, pm2: Pm2, name: str, restarts: int):
        self.pm2, self.name, self.restarts, self.returncode = pm2, name, restarts, None

    def poll(self):
        app = self.pm2.app(self.name)
        if app is None:
            self.returncode = -1
        else:
            env = app["pm2_env"]
            if env["status"] in ("online", "launching") and env["restart_time"] <= self.restarts:
                return None
            self.returncode = env.get("exit_code", -1)
        return self.returncode


def test_ecosystem_file_runs_the_guides_miner():
    _require_pm2()
    apps = _node_json(ECOSYSTEM)["apps"]
    assert [a["name"] for a in apps] == ["miner"]  # the validator entry is there, commented out
    miner = apps[0]
    assert miner["script"] == "neurons/miner.py" and miner["interpreter"] == "python3"
    assert miner["cwd"] == str(REPO)
    assert miner["args"] == _guide_miner_args()
    assert miner["autorestart"] is True and miner["stop_exit_codes"] == [2, 3]
    assert miner["kill_timeout"] >= 10000
    # a chain outage of a day is retried (starts that fail within min_uptime count towards
    # max_restarts; the delay grows to 15 s): pm2 must not give up on the miner after a minute
    assert miner["max_restarts"] * 15 >= 24 * 3600
    assert miner["out_file"] == str(REPO / "logs" / "miner.out.log")
    assert miner["error_file"] == str(REPO / "logs" / "miner.err.log")
    text = ECOSYSTEM.read_text()
    assert '//   name: "validator",' in text and '//   script: "neurons/validator.py",' in text


def test_miner_under_pm2_answers_restarts_and_is_deleted(tmp_path, tiny_model, image_factory, send,
                                                         reopen_session_chain):
    _require_pm2()
    from bitmind.image_io import decode_image, encode_image
    from bitmind.miner.predict import Predictor
    from bitmind.protocol import ImageSynapse

    root = tmp_path / "chain"
    # A short PM2_HOME: pm2's unix sockets live there (paths are limited to 107 bytes).
    home = Path(tempfile.mkdtemp(prefix="bm-pm2-"))
    env = {**os.environ, "PM2_HOME": str(home), "PYTHONWARNINGS": "ignore",
           # `interpreter: "python3"` resolves from PATH, as in the guide with the venv activated.
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    pm2 = Pm2(home, env)
    name = f"bitmind-test-miner-{os.getpid()}"
    port = local_chain.free_port()
    logs = tmp_path / "logs"
    seen_pids: set[int] = set()

    def ecosystem(app: str, model: Path) -> Path:
        """The shipped ecosystem file's miner, pointed at the test chain (everything else as shipped)."""
        eco = tmp_path / f"{app}.config.js"
        overrides = {"name": app, "out_file": str(logs / f"{app}.out.log"), "error_file": str(logs / f"{app}.err.log"),
                     "args": ["--mock", "--local.root", str(root), "--netuid", str(NETUID), "--wallet.name", "miner",
                              "--wallet.hotkey", "default", "--axon.port", str(port),
                              "--neuron.model_path", str(model), "--neuron.device", "cpu"]}
        eco.write_text(f"const base = require({json.dumps(str(ECOSYSTEM))});\n"
                       f"const miner = base.apps.find((a) => a.name === 'miner');\n"
                       f"module.exports = {{ apps: [Object.assign({{}}, miner, {json.dumps(overrides)})] }};\n")
        return eco

    def serving_pid(restarts: int) -> int:
        """Wait for the pm2 app to serve, query it as the validator; its pid."""
        axon = local_chain.wait_for_axon(chain, NETUID, miner_hotkey, port, Pm2Process(pm2, name, restarts), SERVE_TIMEOUT)
        assert (axon.ip, axon.port) == ("127.0.0.1", port)
        app = pm2.app(name)
        assert app["pm2_env"]["status"] == "online" and app["pm2_env"]["restart_time"] == restarts
        seen_pids.add(app["pid"])
        resp = send(validator, axon, ImageSynapse(image=synapse_image), timeout=30.0)
        assert resp.dendrite.status_code == 200, resp.dendrite.status_message
        assert resp.prediction == pytest.approx(expected, abs=1e-5)
        return app["pid"]

    image = image_factory(size=120, seed=5)
    synapse_image = encode_image(image, "JPEG", 75)
    local = Predictor(str(tiny_model), device="cpu")
    expected = local.predict_image(decode_image(synapse_image))
    local.close()
    try:
        # The chain, as an operator makes it: one miner hotkey, one validator with stake and permit.
        p = subprocess.run([sys.executable, "-m", "bitmind.local_chain", "setup", str(root), "--netuid", str(NETUID)],
                           capture_output=True, text=True, env=env, timeout=300)
        assert p.returncode == 0, p.stderr
        local_chain.patch_external_ip()  # bt.Dendrite() offline
        chain = local_chain.open_local_chain(root, NETUID)
        validator = local_chain.local_wallet(root, "validator")
        miner_hotkey = local_chain.local_wallet(root, "miner").hotkey.ss58_address

        pm2("start", str(ecosystem(name, tiny_model)))
        app = pm2.app(name)
        assert app["pm2_env"]["exec_interpreter"] == "python3"
        assert Path(app["pm2_env"]["pm_exec_path"]) == REPO / "neurons" / "miner.py"
        first = serving_pid(restarts=0)

        pm2("restart", name)
        second = serving_pid(restarts=1)
        assert second != first and not _alive(first, "miner.py")

        pm2("delete", name)
        assert pm2.app(name) is None
        deadline = time.monotonic() + 30
        while _alive(second, "miner.py") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(second, "miner.py"), "pm2 delete left the miner running"
        assert not local_chain.wait_for_port(port, timeout=1.0), "the axon port still accepts connections"
        out = (logs / f"{name}.out.log").read_text()
        assert out.count("axon serving on 127.0.0.1") == 2 and "miner stopped" in out

        # Restart policy: exit status 2 (model missing) needs the operator; pm2 must not
        # restart it in a loop (stop_exit_codes).
        broken = name + "-nomodel"
        pm2("start", str(ecosystem(broken, tmp_path / "missing.pth")))
        deadline = time.monotonic() + SERVE_TIMEOUT
        while (pm2.app(broken) or {}).get("pm2_env", {}).get("exit_code") is None and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(3.0)  # longer than the first back-off delay (1 s)
        env_ = pm2.app(broken)["pm2_env"]
        assert env_["exit_code"] == 2 and env_["restart_time"] == 0 and pm2.app(broken)["pid"] == 0
        assert "model file not found" in "".join(f.read_text() for f in logs.glob(f"{broken}.*.log"))
        pm2("delete", broken)
    except BaseException:
        for path in sorted(logs.glob("*.log")) if logs.is_dir() else []:
            print(f"--- {path.name} ---\n" + path.read_text(errors="replace")[-4000:])
        print("--- pm2 daemon log ---\n" + ((home / "pm2.log").read_text(errors="replace")[-4000:]
                                             if (home / "pm2.log").exists() else "(none)"))
        raise
    finally:
        for args in (("delete", "all"), ("kill",)):
            try:
                pm2(*args, check=False)
            except (subprocess.TimeoutExpired, OSError):
                pass
        try:
            daemon = int((home / "pm2.pid").read_text().strip())
        except (OSError, ValueError):
            daemon = None
        if daemon is not None and _alive(daemon, str(home)):  # "PM2 vX: God Daemon (<PM2_HOME>)"
            os.kill(daemon, signal.SIGKILL)
        for pid in seen_pids:
            if _alive(pid, "miner.py"):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(home, ignore_errors=True)

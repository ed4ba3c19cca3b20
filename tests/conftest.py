"""Shared fixtures: tiny checkpoints, one local chain per test session, axons on loopback.

Everything runs on 127.0.0.1 against ``bitmind.local_chain`` (MockSubtensor); no test
touches the network. Models are tiny NPRs (layers [1, 1], width 8) so a forward pass
costs milliseconds on a CPU.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from bitmind.common import has_cxx_compiler

#: A test that compiles with TorchInductor on the CPU (it needs a C++ compiler).
needs_cxx = pytest.mark.skipif(not has_cxx_compiler(), reason="TorchInductor needs a C++ compiler")

NETUID = 34


def pytest_configure(config):
    """Test tiers: ``bash scripts/run_tests.sh -m "not slow"`` is the fast inner loop; CI runs everything."""
    config.addinivalue_line("markers", "slow: takes seconds to minutes (notebooks, torchrun, subprocess miners, hot swap under load)")
    config.addinivalue_line("markers", "process: starts other processes (torchrun, miners, validators, pm2)")


# Serve fp32 on a CPU in tests (and in the miners, validators and notebook kernels they
# start) whatever the CPU can do, so expected probabilities do not depend on the machine CI
# happens to get; the bf16 path is tested by asking for it (amp="bf16").
os.environ["BITMIND_CPU_BF16"] = "0"

VALIDATOR_STAKE = 1000.0
MEMBER_STAKE = 5.0
REPO = Path(__file__).resolve().parents[1]


def load_script(relpath: str):
    """A script of the repository (``benchmarks/accuracy.py``, ...) imported as a module, so a
    test can call its functions; scripts are not part of the package."""
    path = REPO / relpath
    name = f"{path.stem}_under_test"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the script is executed
    spec.loader.exec_module(module)
    return module


def make_checkpoint(path: str | Path, seed: int = 0, **meta) -> Path:
    """Save a tiny NPR whose weights depend on ``seed``; ``meta`` (e.g. ``temperature``) is
    stored in its metadata block."""
    import torch

    from bitmind.checkpoint import model_meta, save_checkpoint
    from bitmind.models import build_model

    torch.manual_seed(seed)
    model = build_model("npr", layers=[1, 1], width=8)
    with torch.no_grad():  # make the output depend clearly on the seed
        model.fc1.bias.fill_(float(seed) * 0.5 - 0.25)
    return save_checkpoint(model, path, meta=model_meta(model, **meta) if meta else None)


def sample_image(size: int = 96, seed: int = 0) -> Image.Image:
    """A small deterministic RGB image with some structure."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    base = np.stack([x * 255 / size, y * 255 / size, (x + y) * 127 / size], -1)
    noise = rng.normal(0, 12, base.shape)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype("uint8"), "RGB")


def jpeg_bytes(img: Image.Image, quality: int = 75) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("models") / "tiny.pth", seed=0)


@pytest.fixture(scope="session")
def local_net(tmp_path_factory):
    """One local chain for the session: a miner, a validator (stake + permit), a registered
    non-validator ("member") and a wallet that is never registered ("stranger")."""
    from bitmind import local_chain

    root = tmp_path_factory.mktemp("chain")
    chain, wallets = local_chain.local_setup(root, NETUID, miners=("miner",), validators=("validator",),
                                             validator_stake=VALIDATOR_STAKE, block_time=0)
    wallets["member"] = local_chain.local_wallet(root, "member")
    chain.register(wallets["member"], NETUID, stake=MEMBER_STAKE, validator=False)
    wallets["stranger"] = local_chain.local_wallet(root, "stranger")
    return SimpleNamespace(root=root, chain=chain, wallets=wallets, netuid=NETUID,
                           metagraph=chain.metagraph(NETUID), validator_stake=VALIDATOR_STAKE,
                           member_stake=MEMBER_STAKE)


@pytest.fixture
def session_chain(local_net):
    """Make sure this process's (single) mock chain is the session chain: other test
    modules may have opened another local chain in between. Use with
    ``pytestmark = pytest.mark.usefixtures("session_chain")``."""
    from bitmind import local_chain

    local_chain.open_local_chain(local_net.root, NETUID, block_time=0)
    return local_net


@pytest.fixture
def reopen_session_chain(local_net):
    """For tests that open other local chains: put the session chain back afterwards
    (MockSubtensor keeps one chain per process)."""
    yield
    from bitmind import local_chain

    local_chain.open_local_chain(local_net.root, NETUID, block_time=0)


@contextlib.contextmanager
def serving(handlers, wallet):
    """Serve ``handlers`` on a real ``bt.Axon`` on a random free loopback port; yields its AxonInfo."""
    import bittensor as bt

    from bitmind import local_chain

    port = local_chain.free_port()
    axon = bt.Axon(wallet=wallet, ip="127.0.0.1", external_ip="127.0.0.1", port=port)
    handlers.attach(axon)
    axon.start()
    try:
        assert local_chain.wait_for_port(port), f"axon did not listen on {port}"
        yield axon.info()
    finally:
        axon.stop()


def query(wallet, axon_info, synapse, timeout: float = 20.0):
    """One request through a real ``bt.Dendrite`` signed by ``wallet``; returns the response synapse."""
    from bitmind import local_chain

    return local_chain.query_axon(wallet, axon_info, synapse, timeout=timeout)


#: Put first on PYTHONPATH (as ``sitecustomize``), it presses Ctrl-C (``signal.raise_signal``: a
#: real SIGINT, handled by Python's own handler and the command's) the moment the module named by
#: $CTRL_C_AT_IMPORT is first imported, or, with $CTRL_C_AT_CALL = MODULE:FUNCTION:N[:PRESSES],
#: PRESSES times (default 1) as FUNCTION of MODULE is called for the N-th time, before it runs.
#: So a test of a command's Ctrl-C presses it at a known point and never waits on the clock.
#: $CTRL_C_SIGNAL (a name, default SIGINT) sends another signal instead: SIGTERM, as ``timeout``.
CTRL_C_SITECUSTOMIZE = textwrap.dedent("""
    import importlib.machinery
    import os
    import signal
    import sys


    def _press(times=1):
        for _ in range(times):
            signal.raise_signal(getattr(signal, os.environ.get("CTRL_C_SIGNAL") or "SIGINT"))


    class _AtImport:
        def __init__(self, name):
            self.name = name

        def find_spec(self, name, path=None, target=None):
            if name == self.name:
                sys.meta_path.remove(self)  # once
                _press()
            return None


    class _AtCall:
        def __init__(self, where):
            self.module, self.function, n, *presses = where.split(":")
            self.n, self.presses = int(n), int(presses[0]) if presses else 1

        def find_spec(self, name, path=None, target=None):
            if name != self.module:
                return None
            sys.meta_path.remove(self)
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            run_module = spec.loader.exec_module

            def exec_module(module):  # the module as it is, its function wrapped before anyone imports it
                run_module(module)
                real, calls = getattr(module, self.function), [0]

                def wrapper(*args, **kwargs):
                    calls[0] += 1
                    if calls[0] == self.n:
                        _press(self.presses)
                    return real(*args, **kwargs)

                setattr(module, self.function, wrapper)

            spec.loader.exec_module = exec_module
            return spec


    if os.environ.get("CTRL_C_AT_IMPORT"):
        sys.meta_path.insert(0, _AtImport(os.environ["CTRL_C_AT_IMPORT"]))
    if os.environ.get("CTRL_C_AT_CALL"):
        sys.meta_path.insert(0, _AtCall(os.environ["CTRL_C_AT_CALL"]))
""")


# Helpers as fixtures, so test modules never import conftest by name.
@pytest.fixture(scope="session")
def checkpoint_factory():
    return make_checkpoint


@pytest.fixture(scope="session")
def image_factory():
    return sample_image


@pytest.fixture(scope="session")
def serve():
    return serving


@pytest.fixture(scope="session")
def send():
    return query


@pytest.fixture(scope="session")
def ctrl_c_env(tmp_path_factory):
    """``ctrl_c_env(at_import="", at_call="", path=(), sig="SIGINT")``: the environment (``os.environ``
    and these) for a command whose Ctrl-C a test presses with ``CTRL_C_SITECUSTOMIZE`` (see there
    for ``at_import`` and ``at_call``; both empty: no press); ``sig``: the signal sent instead
    (``SIGTERM``). On its PYTHONPATH: the hook's folder first, then ``path``, then the PYTHONPATH
    of the tests."""
    hooks = tmp_path_factory.mktemp("ctrl_c_hooks")
    (hooks / "sitecustomize.py").write_text(CTRL_C_SITECUSTOMIZE)

    def env(at_import: str = "", at_call: str = "", path=(), sig: str = "SIGINT") -> dict[str, str]:
        pythonpath = [str(hooks), *map(str, path), os.environ.get("PYTHONPATH")]
        return {**os.environ, "CTRL_C_AT_IMPORT": at_import, "CTRL_C_AT_CALL": at_call, "CTRL_C_SIGNAL": sig,
                "PYTHONPATH": os.pathsep.join(filter(None, pythonpath))}
    return env


@pytest.fixture
def usage_error(capsys):
    """``usage_error(main, argv)``: ``main(argv)`` must refuse ``argv`` as argparse does
    (exit status 2); returns what it printed to stderr."""
    def run(main, argv) -> str:
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        return capsys.readouterr().err
    return run


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one intra-op thread; several fight over CI's 2 cores
    (60x slower measured). Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def hear(caplog, name: str, level: int = logging.INFO):
    """Let ``caplog`` hear logger ``name`` directly at ``level`` (other tests' logging setup,
    bittensor's included, may raise its level or keep its records from the root logger);
    returns the undo."""
    log = logging.getLogger(name)
    before = log.level
    log.addHandler(caplog.handler)
    log.setLevel(level)
    caplog.handler.setLevel(level)

    def undo() -> None:
        log.removeHandler(caplog.handler)
        log.setLevel(before)
    return undo


@pytest.fixture
def listen(caplog):
    """``listen(name)``: ``caplog`` hears logger ``name`` at INFO for the test (``hear``)."""
    undos = []
    yield lambda name: undos.append(hear(caplog, name))
    for undo in reversed(undos):
        undo()


@pytest.fixture
def run_folder_logs(caplog):
    """``caplog`` hearing the run folder's logger (``bitmind.training.run_folder``: what
    ``--overwrite`` set aside, put back or removed) at INFO."""
    undo = hear(caplog, "bitmind.training.run_folder")
    yield caplog
    undo()

"""Pieces shared by the command lines, the trainer, the miner and the validator: subnet
constants, boolean flags, device and AMP resolution, atomic file writes, and routing the
package's log records to the console of a neuron."""
from __future__ import annotations

import argparse
import logging
import math
import os
import shlex
import sys
from pathlib import Path

import torch

from bitmind.atomic_files import atomic_write, atomic_write_text  # noqa: F401  (re-exported: callers import them from here)

#: Subnet 34 (BitMind) on finney; its testnet twin is 168.
SN34_NETUID = 34
TESTNET_NETUID = 168
#: Share of validator challenges sent without random augmentation (JPEG only).
PLAIN_SHARE = 0.2

_TRUE = ("1", "true", "t", "yes", "y", "on")
_FALSE = ("0", "false", "f", "no", "n", "off")


def register_command(config, netuid: int) -> str:
    """The ``btcli`` command that registers the configured hotkey on ``netuid`` of the network
    this neuron is configured for (its ``--subtensor.network`` and ``--wallet.path`` when not
    the defaults). Why: a hint that names only the netuid sends
    an operator on testnet or a private chain to register on the main network, paying real TAO."""
    wallet, subtensor = config.get("wallet") or {}, config.get("subtensor") or {}
    parts = ["btcli s register", f"--netuid {netuid}", f"--wallet.name {wallet.get('name') or 'default'}",
             f"--wallet.hotkey {wallet.get('hotkey') or 'default'}"]
    path = wallet.get("path")
    if path and os.path.expanduser(str(path)).rstrip("/") != os.path.expanduser("~/.bittensor/wallets"):
        parts.append(f"--wallet.path {shlex.quote(str(path))}")
    network = subtensor.get("network")  # a name (test, local) or an endpoint URL: btcli takes either
    if network and network != "finney":
        parts.append(f"--subtensor.network {network}")
    elif netuid == TESTNET_NETUID:
        parts.append("--subtensor.network test")
    return " ".join(parts)


def _checked(value, convert, ok, what: str):
    """``convert(value)`` if it converts and ``ok`` holds for it, else argparse's type error
    saying ``expected {what}``: the one body of the range-checked types below."""
    try:
        x = convert(value)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected {what}, got {value!r}") from None
    if not ok(x):
        raise argparse.ArgumentTypeError(f"expected {what}, got {value!r}")
    return x


def positive_int(value) -> int:
    """argparse type for limits and counts: an integer > 0."""
    return _checked(value, int, lambda n: n > 0, "a positive integer")


def non_negative_int(value) -> int:
    """argparse type for counts where 0 means "automatic": an integer >= 0."""
    return _checked(value, int, lambda n: n >= 0, "an integer >= 0")


def positive_float(value) -> float:
    """argparse type for intervals: a finite number > 0 (an interval of 0 would sync or log in a busy loop)."""
    return _checked(value, float, lambda x: 0 < x < math.inf, "a positive number")


def non_negative_float(value) -> float:
    """argparse type for waits that may be 0: a finite number >= 0."""
    return _checked(value, float, lambda x: 0 <= x < math.inf, "a number >= 0")


def unit_fraction(value) -> float:
    """argparse type for a share in [0, 1]."""
    return _checked(value, float, lambda x: 0 <= x <= 1, "a number in [0, 1]")


def positive_fraction(value) -> float:
    """argparse type for a factor in (0, 1] (a moving average's weight)."""
    return _checked(value, float, lambda x: 0 < x <= 1, "a number in (0, 1]")


def parse_bool(value) -> bool:
    """argparse type for ``--flag true|false|1|0|yes|no|on|off``."""
    if isinstance(value, bool):
        return value
    v = str(value).strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {value!r}")


def has_cxx_compiler() -> bool:
    """Whether TorchInductor can compile for the CPU here: it needs a C++ compiler."""
    import shutil

    return bool(shutil.which("g++") or shutil.which("clang++"))


def resolve_device(name: str | torch.device | None = "auto", local_rank: int = 0) -> torch.device:
    """``auto``/None -> CUDA (``cuda:<local_rank>``) if available, else CPU; a bare ``cuda``
    gets ``local_rank`` as its index."""
    if isinstance(name, torch.device):
        return name
    if name in (None, "auto"):
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device(f"cuda:{local_rank}")
    return dev


def check_device(device: str | torch.device | None = "auto", flag: str = "--device") -> torch.device:
    """``resolve_device``, refusing a device this machine does not have (a ValueError with one
    line to show, not the driver's traceback from the first tensor moved): what every command
    line with a device option (trainer, eval, calibrate; the miner's ``--neuron.device``,
    named by ``flag``) checks before reading data. Accepted: ``auto``, ``cpu``, a CUDA device
    that is there, and ``mps`` / ``xpu`` where this machine has one; any other device torch
    names (``mps`` on a machine without it, ``xla``, ``meta``, ...) is refused here, not by
    the first tensor moved (``PyTorch is not linked with support for mps devices``)."""
    try:
        dev = resolve_device(device)
    except (RuntimeError, TypeError, ValueError) as e:  # torch.device("gpu"): "Expected one of cpu, cuda, ..."
        raise ValueError(f"{flag} {device!r}: unknown ({str(e).splitlines()[0]})") from None
    instead = f"use {flag} cpu or auto"
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count():
            raise ValueError(f"{flag} {device!r}: no such CUDA device on this machine "
                             f"({torch.cuda.device_count() if torch.cuda.is_available() else 0} visible); {instead}")
        return dev
    if dev.type == "meta":
        raise ValueError(f"{flag} {device!r}: the meta device holds no data, so no model runs on it; {instead}")
    backend = {"mps": getattr(torch.backends, "mps", None), "xpu": getattr(torch, "xpu", None)}.get(dev.type)
    if backend is None:  # xla, hpu, ipu, privateuseone, ...: torch knows the name, these commands do not run there
        raise ValueError(f"{flag} {device!r}: not a device these commands run on (they run on cpu, cuda, cuda:N, "
                         f"and mps or xpu where the machine has one); {instead}")
    try:
        count = 0 if not backend.is_available() else 1 if dev.type == "mps" else backend.device_count()
    except Exception:  # noqa: BLE001 - a backend that cannot even say: not here
        count = 0
    if (dev.index or 0) >= count:
        raise ValueError(f"{flag} {device!r}: no such {dev.type} device on this machine ({count} visible); {instead}")
    return dev


def resolve_amp(name: str | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of an AMP mode (``auto``/``bf16``/``fp16``/``none``) on ``device``:
    None (fp32) off CUDA, bf16 for ``auto``."""
    if device.type != "cuda" or name in (None, "none"):
        return None
    if name in ("auto", "bf16"):
        return torch.bfloat16
    if name == "fp16":
        return torch.float16
    raise ValueError(f"unknown amp mode {name!r}")


def machine_info(device: torch.device | None = None) -> dict:
    """What a benchmark's result should say about the machine it ran on: platform, Python,
    torch, CPU count and model (``/proc/cpuinfo`` where readable), torch threads and, for a
    CUDA ``device``, its name and the CUDA / cuDNN versions (``device_name`` is the CPU model
    otherwise). Figures from a lent machine mean little without it."""
    import platform

    m = {"platform": platform.platform(), "python": platform.python_version(), "processor": platform.processor(),
         "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
         "device": str(device) if device is not None else "cpu"}
    try:
        m["cpu_model"] = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                              if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cuda = device is not None and torch.device(device).type == "cuda"
    m["device_name"] = torch.cuda.get_device_name(device) if cuda else m.get("cpu_model", platform.processor())
    if cuda:
        m["cuda"], m["cudnn"] = torch.version.cuda, torch.backends.cudnn.version()
    return m


def output_path_problem(path, flag: str, folder: bool = False) -> str | None:
    """Why ``path`` (an output file, or with ``folder`` an output folder) cannot be written,
    else None: checked before long work (an evaluation, downloads), so a typo never costs its minutes."""
    if not path:
        return None
    p = Path(path)
    if folder:
        if p.exists() and not p.is_dir():
            return f"{flag} {path} is a file, not a folder"
    elif p.is_dir():
        return f"{flag} {path} is a folder; name a file"
    parent = (p if folder else p.parent).resolve()
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"{flag} {path}: {parent} is a file, not a folder"
    if not os.access(parent, os.W_OK):
        return f"{flag} {path}: {parent} is not writable"
    return None


def write_target(path: str | os.PathLike, strict: bool = True) -> Path:
    """The file a write to ``path`` replaces: ``path`` itself, or for a symlink the file it
    points at (every link followed), so an atomic write (a temporary file renamed over the
    target: ``atomic_write``) changes that file and keeps the link, as ``cp`` or a shell's
    ``>`` would. Renaming over the link itself would turn it into a regular file and leave
    the version it pointed at unchanged (docs/Mining.md deploys models by symlink). A link
    that loops, or points into a folder that does not exist, is a ValueError (``strict``),
    else ``path`` itself."""
    p = Path(path)
    if not p.is_symlink():
        return p
    real = Path(os.path.realpath(p))
    problem = (f"{path} is a symbolic link that loops back on itself; point it at a file"
               if real.is_symlink() or real == Path(os.path.abspath(p)) else
               f"{path} is a symbolic link to {real}, in a folder that does not exist" if not real.parent.is_dir() else None)
    if problem and strict:
        raise ValueError(problem)
    return p if problem else real


def route_library_logs(debug: bool = False) -> None:
    """Show the package's ``logging`` records on stdout (a neuron's console) and keep torch's
    loggers at WARNING (``bt.logging`` raises every known logger to INFO; torch's then print
    compile statistics at exit). The package's own module loggers go back to inheriting the
    package's level: importing bittensor sets every logger that exists by then to CRITICAL,
    so a module imported before it (a hot-reload refusal, a calibration warning) would
    otherwise stay silent whatever the level asked for here."""
    lib = logging.getLogger("bitmind")
    if not lib.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s | %(levelname)-8s | %(name)s | %(message)s"))
        lib.addHandler(handler)
    lib.setLevel(logging.DEBUG if debug else logging.INFO)
    lib.propagate = False
    for name in list(logging.root.manager.loggerDict):
        if name == "torch" or name.startswith("torch."):
            logging.getLogger(name).setLevel(logging.WARNING)
        elif name.startswith("bitmind."):
            logging.getLogger(name).setLevel(logging.NOTSET)

"""End-to-end local demo: start the miner on a local chain, query it like a validator.

    python -m bitmind.demo [--image PATH] [--model PATH] [--keep]

What it does, all on 127.0.0.1 with no network:

1. opens a local chain (``bitmind.local_chain``) in a temporary folder and registers a
   miner hotkey and a validator hotkey (with stake and a validator permit);
2. starts ``neurons/miner.py --mock`` as a separate process, exactly as an operator
   would, serving ``--model`` (default ``mining_models/base.pth``; if that does not
   exist yet, an untrained interim model is made so the plumbing can still be shown);
3. waits for the miner's axon to appear on the chain, then sends images (``--image``, or
   the four shipped samples in ``tests/data/samples``: two real photos, two Stable
   Diffusion images) through a real
   ``bt.Dendrite`` signed by the validator, JPEG q75 as validators send them;
4. prints each answer next to the true class and the same model's local prediction,
   and stops the miner.

Exit status 0 only if the miner answered every image with a probability in [0, 1].
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
MINER_SCRIPT = REPO_ROOT / "neurons" / "miner.py"
SAMPLES_DIR = REPO_ROOT / "tests" / "data" / "samples"  # 2 real photos + 2 SD images, CLASS/SOURCE layout
DEFAULT_MODEL = "mining_models/base.pth"


def interim_model(path: Path) -> Path:
    """An untrained tiny NPR checkpoint: shows the plumbing, says nothing about images."""
    import torch

    from bitmind.checkpoint import save_checkpoint
    from bitmind.models import build_model

    torch.manual_seed(0)
    return save_checkpoint(build_model("npr", layers=[1, 1], width=8), path)


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except FileNotFoundError:
        return "(no log)"


def image_problem(path: str):
    """``(image, None)`` if ``path`` is an image file the miner would decode (read with
    ``bitmind.image_io.load_image_file``, the miner's own limits), else ``(None, why)``."""
    from bitmind.image_io import ImageDecodeError, load_image_file

    p = Path(path).expanduser()
    if not p.exists():
        return None, f"--image {path} not found"
    if p.is_dir():
        return None, f"--image {path} is a folder; name an image file"
    try:
        return load_image_file(p), None
    except ImageDecodeError as e:  # Pillow names the in-memory buffer it read from: not the operator's file
        return None, f"--image {path}: " + re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", str(e))
    except OSError as e:
        return None, f"--image {path} cannot be read: {e.strerror or e}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", help="image file to send (default: the shipped samples in tests/data/samples)")
    ap.add_argument("--model", default=DEFAULT_MODEL, help=f"model file for the miner (default {DEFAULT_MODEL})")
    ap.add_argument("--root", help="local chain folder (default: a fresh temporary folder)")
    ap.add_argument("--port", type=int, default=0, help="axon port (default: a free one)")
    ap.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the miner to come up")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (chain, wallets, miner log)")
    args = ap.parse_args(argv)

    from bitmind import local_chain
    from bitmind.checkpoint import model_file_problem
    from bitmind.common import SN34_NETUID as NETUID, output_path_problem
    from bitmind.shutdown import stop_process
    from bitmind.image_io import decode_image, encode_image
    from bitmind.miner.config import resolve_model_path
    from bitmind.miner.predict import Predictor
    from bitmind.protocol import ImageSynapse

    if not MINER_SCRIPT.is_file() or not (args.image or SAMPLES_DIR.is_dir()):
        print(f"error: {MINER_SCRIPT} or {SAMPLES_DIR} not found; run the demo from a checkout of the repository",
              file=sys.stderr)
        return 2
    # Everything the operator named is checked before the chain folder, the wallets and the
    # miner process exist (starting the miner takes seconds): one line, exit status 2.
    problem = output_path_problem(args.root, "--root", folder=True)
    image = None
    if not problem and args.image:
        image, problem = image_problem(args.image)
    model = resolve_model_path(args.model, REPO_ROOT)
    if not problem and (model.exists() or args.model != DEFAULT_MODEL):
        problem = model_file_problem(model)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="bitmind-demo-"))
    port = args.port or local_chain.free_port()
    if not model.is_file():
        model = interim_model(root / "interim_untrained.pth")
        print(f"note: {DEFAULT_MODEL} does not exist yet; serving an UNTRAINED interim model ({model}).\n"
              "      Its answers show the plumbing only. Train a model (README, Training) for real predictions.")

    chain, wallets = local_chain.local_setup(root, NETUID, miners=("miner",), validators=("validator",))
    miner_w, vali_w = wallets["miner"], wallets["validator"]
    log_path = root / "miner.log"
    cmd = [sys.executable, str(MINER_SCRIPT), "--mock", "--local.root", str(root), "--netuid", str(NETUID),
           "--wallet.name", "miner", "--wallet.hotkey", "default", "--axon.port", str(port),
           "--neuron.model_path", str(model), "--neuron.device", "cpu"]
    print(f"starting miner: {' '.join(cmd)}\n  (log: {log_path})")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO_ROOT))
    code = 1
    try:
        axon = local_chain.wait_for_axon(chain, NETUID, miner_w.hotkey.ss58_address, port, proc, args.timeout)
        print(f"miner is serving at {axon.ip}:{axon.port} (hotkey {axon.hotkey})")
        if args.image:
            todo = [(image, args.image, None)]  # read and checked before the miner started
        else:
            from bitmind.data import LocalFolderSource

            src = LocalFolderSource(SAMPLES_DIR)
            todo = [(src.load(i), Path(src.path(i)).relative_to(REPO_ROOT).as_posix(), src.label(i)) for i in range(len(src))]
        local_pred = Predictor(str(model), device="cpu")
        answered = 0
        for image, label, truth in todo:
            synapse = ImageSynapse(image=encode_image(image, "JPEG", 75))
            t0 = time.perf_counter()
            resp = local_chain.query_axon(vali_w, axon, synapse, timeout=30.0)
            dt = time.perf_counter() - t0
            status = getattr(resp.dendrite, "status_code", None)
            message = getattr(resp.dendrite, "status_message", None)
            local = local_pred.predict_image(decode_image(synapse.image))
            print(f"\nimage: {label}" + ("" if truth is None else f"  (truly {'AI-generated' if truth else 'real'})"))
            print(f"miner answered prediction={resp.prediction:.6f} (status {status} {message or ''}) in {dt * 1000:.0f} ms")
            print(f"same model, same image, locally: {local:.6f}")
            if 0.0 <= resp.prediction <= 1.0:
                verdict = "AI-generated" if resp.prediction > 0.5 else "real"
                right = "" if truth is None else ("  -> correct" if (resp.prediction > 0.5) == bool(truth) else "  -> WRONG")
                print(f"verdict: {verdict} (p={resp.prediction:.3f}; > 0.5 means AI-generated){right}")
                answered += 1
            else:
                print("the miner made no prediction (-1.0); see its log below", file=sys.stderr)
                print(_tail(log_path), file=sys.stderr)
        code = 0 if answered == len(todo) else 1
    except Exception as e:
        print(f"demo failed: {type(e).__name__}: {e}\n--- miner log ---\n{_tail(log_path)}", file=sys.stderr)
    finally:
        stop_process(proc)
        print(f"miner stopped (exit status {proc.returncode})")
        if args.keep or args.root:
            print(f"local chain, wallets and miner log kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())

"""The one forward pass of the project: ``forward_logits`` runs a model on a batch for the
trainer, the sweep, the miner and ``bitmind.eval`` alike, and ``prepare_for_serving``
makes the CPU-prepared copy the miner serves (batch norms folded into convolutions,
channels-last weights; bf16 autocast where the CPU runs bf16 natively), so evaluation
scores what the miner serves.
"""
from __future__ import annotations

import copy
import logging
import os
import time

import torch
import torch.nn as nn

from bitmind.image_transforms import TARGET_SIZE

logger = logging.getLogger(__name__)


def to_model_input(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Batch from a loader (uint8 or float) -> float in [0, 1] on ``device``."""
    x = x.to(device, non_blocking=True)
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def forward_logits(model: nn.Module, batch: torch.Tensor, device: torch.device | None = None,
                   amp_dtype: torch.dtype | None = None, channels_last: bool | None = None) -> torch.Tensor:
    """(B,) float32 logits of ``model`` on ``batch`` (uint8 or float in [0, 1], any device),
    on ``device`` (default: the model's). Input is channels-last when ``channels_last``
    (default: on CUDA); ``amp_dtype`` autocasts on CUDA only. Gradients flow unless the
    caller runs it under ``torch.no_grad``/``inference_mode``. The detector's logit is a
    model's first output: a model with more (an auxiliary head, ``TrainConfig.aux_weight``)
    is served, scored and calibrated on that one alone."""
    return forward_outputs(model, batch, device, amp_dtype, channels_last)[:, 0]


def forward_outputs(model: nn.Module, batch: torch.Tensor, device: torch.device | None = None,
                    amp_dtype: torch.dtype | None = None, channels_last: bool | None = None) -> torch.Tensor:
    """(B, C) float32 outputs of ``model`` on ``batch``, every column (``forward_logits``
    keeps the first): training with an auxiliary head reads the others."""
    if device is None:
        device = next(model.parameters()).device
    x = to_model_input(batch, device)
    if channels_last if channels_last is not None else device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    if amp_dtype is not None and device.type == "cuda":
        with torch.autocast("cuda", dtype=amp_dtype):
            out = model(x)
    else:
        out = model(x)
    return out.float().reshape(out.shape[0], -1)


def fold_batch_norms(model: nn.Module) -> int:
    """Fold each ``BatchNorm2d`` that directly consumes a ``Conv2d``'s output into that
    convolution (in eval mode, BN is an affine map per channel), in place; returns how
    many were folded.

    Pairs are found by running a probe through forward hooks of ``model`` itself (not by
    ``torch.fx``, whose tracing patches ``nn.Module.__call__`` process-wide and breaks
    forwards running in other threads meanwhile). A pair whose convolution output is also
    used elsewhere would be folded wrongly: callers must compare outputs (as
    ``optimize_for_cpu`` does)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    names = {m: n for n, m in model.named_modules()}
    produced: dict[tuple, nn.Module] = {}
    pairs: list[tuple[nn.Module, nn.Module]] = []

    def key(t: torch.Tensor) -> tuple:
        return (t.data_ptr(), tuple(t.shape), tuple(t.stride()))

    def after_conv(mod, args, out):
        produced[key(out)] = mod

    def before_bn(mod, args):
        conv = produced.get(key(args[0]))
        if conv is not None:
            pairs.append((conv, mod))

    hooks = [m.register_forward_hook(after_conv) for m in model.modules() if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_pre_hook(before_bn) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    try:
        with torch.inference_mode():
            model.eval()(torch.zeros(1, 3, TARGET_SIZE, TARGET_SIZE))
    finally:
        for h in hooks:
            h.remove()
    convs, bns = [c for c, _ in pairs], [b for _, b in pairs]
    folded = 0
    for conv, bn in pairs:
        if convs.count(conv) > 1 or bns.count(bn) > 1 or names.get(bn, "") == "":
            continue  # a module used twice: leave it alone
        fused = fuse_conv_bn_eval(conv, bn)
        conv.weight, conv.bias = fused.weight, fused.bias
        parent_name, _, attr = names[bn].rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, nn.Identity())
        folded += 1
    return folded


def cpu_runs_bf16() -> bool:
    """Does this CPU compute in bf16 natively (AMX tiles or AVX512-BF16), as torch reports
    it? There bf16 autocast makes the NPR forward about 2.2x faster (docs/Performance.md);
    elsewhere bf16 is emulated and slower than fp32, so it is never used there. The
    environment variable ``BITMIND_CPU_BF16`` (``1`` or ``0``) overrides the answer, for a
    CPU that torch misjudges (and for tests that need the same answer on every machine)."""
    forced = os.environ.get("BITMIND_CPU_BF16", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        try:
            if getattr(torch.cpu, probe)():
                return True
        except Exception:  # an older torch without the probe, or a platform that cannot say
            continue
    return False


def cpu_bf16_wanted(amp: str | None) -> bool:
    """Whether a CPU serves in bf16 for an AMP mode: ``auto`` where the CPU runs bf16
    natively, ``bf16`` always, ``none`` (or None) never. ``fp16`` is a CUDA mode: fp32 here."""
    if amp not in (None, "none", "auto", "bf16", "fp16"):
        raise ValueError(f"unknown amp mode {amp!r}")
    return amp == "bf16" or (amp == "auto" and cpu_runs_bf16())


def cpu_bf16_setting(amp: str | None) -> bool | str:
    """What the miner asks of ``optimize_for_cpu`` for an AMP mode: ``True`` (bf16, as asked:
    ``bf16``, or ``BITMIND_CPU_BF16=1``), ``False`` (fp32), or ``"if_faster"`` (``auto`` on a
    CPU that runs bf16 natively: bf16 only where it is measured faster). Why measure: native
    bf16 is not always faster. On one Xeon with AMX it made the NPR forward 2.2x faster, on a
    Xeon with AVX512-BF16 and no AMX it made it 1.7x slower (docs/Performance.md)."""
    if not cpu_bf16_wanted(amp):
        return False
    if amp == "bf16" or os.environ.get("BITMIND_CPU_BF16", "").strip() == "1":
        return True
    return "if_faster"


def bf16_is_faster(fast: nn.Module, probe: torch.Tensor, rounds: int = 5, margin: float = 0.9) -> bool:
    """Does ``CpuBf16(fast)`` run ``probe`` (one picture) in under ``margin`` of the fp32 time?
    The fastest of ``rounds`` alternating forwards of each, after one warm-up each: the
    minimum is what the CPU can do, least moved by other work on the machine."""
    low = CpuBf16(fast)
    times = {"fp32": [], "bf16": []}
    with torch.inference_mode():
        fast(probe), low(probe)  # warm-up: first calls set up kernels
        for _ in range(rounds):
            for name, m in (("fp32", fast), ("bf16", low)):
                t0 = time.perf_counter()
                m(probe)
                times[name].append(time.perf_counter() - t0)
    fp32, bf16 = min(times["fp32"]), min(times["bf16"])
    faster = bf16 < margin * fp32
    logger.info("CPU forward: fp32 %.1f ms, bf16 %.1f ms: serving %s", fp32 * 1e3, bf16 * 1e3, "bf16" if faster else "fp32")
    return faster


class CpuBf16(nn.Module):
    """``inner`` under bf16 autocast on the CPU, float32 out. Autocast (not bf16 weights)
    keeps the input residuals (NPR, high-pass: differences of about 1/255) in fp32 and
    casts only the matrix work: on the sn34-validator test split the shipped file's served
    probabilities move by 0.045 at most (median 0.013; earlier files 0.015), four decisions
    in 387, all within 0.02 of the boundary (benchmarks/cpu_bf16.py)."""

    bf16 = True  # what the miner's status reports (``CompiledCpu`` says the same of itself)

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.inner(x).float()


def optimize_for_cpu(model: nn.Module, probe_batch: int = 2, bf16: bool | str = False) -> nn.Module:
    """A faster inference-only copy of ``model`` for CPU serving: convolution + batch norm
    pairs folded into one convolution, weights in channels-last layout (see the module
    docstring), run under bf16 autocast if ``bf16`` (``CpuBf16``) and that agrees with fp32
    within 2 % + 0.05 logits, else the fp32 copy; with ``bf16="if_faster"`` only if bf16 is
    also measured faster on one picture (``bf16_is_faster``). Feed it channels-last input.
    Raises if the fp32 copy disagrees with ``model`` (1e-3).

    Why not TorchScript (``optimize_for_inference``, as fast when warm)? Its profiling
    executor re-specialises per input shape and thread at unpredictable times (we measured
    25 ms and 67 ms per image for a model that runs 20 ms), and it is deprecated."""
    fast = copy.deepcopy(model).eval()
    fold_batch_norms(fast)
    fast = fast.to(memory_format=torch.channels_last)
    probe = torch.rand(probe_batch, 3, TARGET_SIZE, TARGET_SIZE, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref = model.eval()(probe).float()
        got = fast(probe.contiguous(memory_format=torch.channels_last)).float()
        low = CpuBf16(fast)(probe.contiguous(memory_format=torch.channels_last)).float() if bf16 else None
    if got.shape != ref.shape or not torch.allclose(got, ref, rtol=1e-3, atol=1e-3):
        raise RuntimeError(f"prepared forward differs from eager by {(got - ref).abs().max().item():.3g}")
    if low is None:
        return fast
    if not torch.allclose(low, ref, rtol=0.02, atol=0.05):
        logger.warning("bf16 forward differs from fp32 by %.3g: serving fp32", (low - ref).abs().max().item())
        return fast
    if bf16 == "if_faster" and not bf16_is_faster(fast, probe[:1].contiguous(memory_format=torch.channels_last)):
        return fast
    return CpuBf16(fast)


class CompiledCpu(nn.Module):
    """``fast`` (an ``optimize_for_cpu`` copy) compiled by TorchInductor. Built by
    ``compile_for_cpu``, which traces and compiles it for one input (its probe's shape,
    float32, channels-last, under ``inference_mode``) at each of ``thread_counts`` intra-op threads
    (inductor specialises its code per count). Serving then runs it *without* ever tracing
    (``torch._dynamo.run``): an input the compiled code does not fit runs eagerly instead of
    recompiling, because a recompile takes seconds and Dynamo tracing while other threads
    run forwards was seen to deadlock."""

    def __init__(self, fast: nn.Module, thread_counts: tuple[int, ...] = ()):
        super().__init__()
        self.fast, self.thread_counts = fast, tuple(sorted(set(thread_counts)))
        self.bf16 = isinstance(fast, CpuBf16)
        self.inner = fast.inner if self.bf16 else fast
        # freezing: weights become constants, pre-packed once for oneDNN (eager re-packs per call)
        self._tracing = torch.compile(self.inner, dynamic=False, options={"freezing": True, "compile_threads": 1})
        import torch._dynamo as dynamo  # here, not at import: it takes a second and most callers never compile

        self._cached_only = dynamo.run(self.inner)

    def _call(self, fn, x: torch.Tensor) -> torch.Tensor:
        if self.bf16:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return fn(x).float()
        return fn(x).float()

    def trace(self, x: torch.Tensor) -> torch.Tensor:
        """Compile for ``x`` at the current thread count (only while nothing else runs)."""
        return self._call(self._tracing, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_inference_mode_enabled() and not x.is_inference():
            x = x.clone()  # traced on an inference tensor: Dynamo's guards tell the two apart
        return self._call(self._cached_only, x)


def compile_for_cpu(fast: nn.Module, batch: int = 1, thread_counts: tuple[int, ...] = (1,),
                    name: str = "model") -> nn.Module | None:
    """``fast`` compiled for ``batch`` pictures of 256 px at each of ``thread_counts`` intra-op
    threads (``CompiledCpu``), or None if that fails (no C++ compiler, an unsupported op) or
    disagrees with ``fast`` on a probe (1e-3 on logits in fp32, 0.02 + 0.05 in bf16). Takes
    seconds to a minute per thread count, and must not run while another thread runs a
    forward (``ModelSlot`` compiles before the miner serves)."""
    prev = torch.get_num_threads()
    try:
        compiled = CompiledCpu(fast, thread_counts)
        tol = dict(rtol=0.02, atol=0.05) if compiled.bf16 else dict(rtol=1e-3, atol=1e-3)
        with torch.inference_mode():  # the probe is an inference tensor, as served inputs are
            probe = torch.rand(batch, 3, TARGET_SIZE, TARGET_SIZE, generator=torch.Generator().manual_seed(1))
            probe = probe.contiguous(memory_format=torch.channels_last)
            ref = fast(probe).float()
            for n in compiled.thread_counts:
                torch.set_num_threads(n)
                compiled.trace(probe)
                got = compiled(probe)
                if got.shape != ref.shape or not torch.allclose(got, ref, **tol):
                    raise RuntimeError(f"compiled forward differs from the prepared one by "
                                       f"{(got - ref).abs().max().item():.3g}")
        return compiled
    except Exception as e:  # the prepared copy still serves
        logger.warning("could not compile %s for CPU serving, serving it uncompiled: %s", name,
                       (str(e).splitlines() or [type(e).__name__])[0][:300])
        return None
    finally:
        torch.set_num_threads(prev)


def prepare_for_serving(model: nn.Module, name: str = "model", bf16: bool | str = False) -> nn.Module | None:
    """``optimize_for_cpu(model, bf16=bf16)``, or None (serve eager) if preparing fails."""
    try:
        return optimize_for_cpu(model, bf16=bf16)
    except Exception as e:  # eager still works: serve it
        logger.warning("could not prepare %s for CPU serving, serving it eager: %s", name, e)
        return None


def forward_precision(forward: nn.Module, amp_dtype: torch.dtype | None) -> str:
    """The arithmetic ``serving_forward``'s result runs in, for reports: "bf16 autocast" (a
    CPU copy that measured bf16 faster, or CUDA's autocast) or "fp32". Why: on a CPU that
    computes bf16 the choice is timed when the model loads, so two runs of one evaluation may
    differ in it, and their probabilities by up to a few hundredths."""
    if amp_dtype is not None:
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(amp_dtype, str(amp_dtype).removeprefix("torch.")) + " autocast"
    if isinstance(forward, CpuBf16) or getattr(forward, "bf16", False) is True:
        return "bf16 autocast"
    return "fp32"


def serving_forward(model: nn.Module, device: torch.device, amp: str | None = "auto",
                    optimize: bool | str = "auto") -> tuple[nn.Module, torch.dtype | None, bool]:
    """What the miner's ``Predictor`` runs for ``model`` on ``device``, as
    ``(module, amp_dtype, channels_last)`` for ``forward_logits``: on a CPU the prepared copy
    (``optimize`` "auto"; eager if preparing fails; bf16 as ``cpu_bf16_setting(amp)`` says),
    on CUDA the eager model in channels-last with bf16 autocast (``amp`` "auto")."""
    from bitmind.common import resolve_amp

    model = model.to(device).eval()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if (device.type == "cpu") if optimize == "auto" else bool(optimize):
        fast = prepare_for_serving(model, bf16=device.type == "cpu" and cpu_bf16_setting(amp))
        if fast is not None:
            return fast, None, True
    return model, resolve_amp(amp, device), device.type == "cuda"

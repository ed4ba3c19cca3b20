"""Fill the Hugging Face cache with the SN34 datasets ahead of training or validating.

    python -m bitmind.download_data [--datasets NAME ...] [--cache_dir DIR] [--force_redownload]
    python bitmind/download_data.py --list

Each dataset is fetched with ``datasets.load_dataset``. The Hub rate-limits bulk
downloads and large shards time out, so transient failures (HTTP 429/5xx, connection
errors, time-outs) are retried with exponential backoff; a dataset that still cannot
be had is reported by name, the others go on, and the exit status is non-zero at the
end. A ``--datasets`` entry that is a local path (a ``real/fake/SOURCE`` image folder,
a ``save_to_disk`` folder or parquet files) is validated and summarised instead:
the same code then reads it for training and evaluation. Nothing is written in the
CLASS/SOURCE layout; the class of each picture of a local Hugging Face dataset without
a role comes from its ``label`` column (see ``resolve_labels``), and labels that cannot be
told real or fake stop the run before anything is downloaded or written (exit status 2).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from bitmind.common import output_path_problem
from bitmind.data.catalog import CATALOG, CatalogEntry, find_entry
from bitmind.data.sources import CLASSES, LABEL_COLUMN, LabelError, normalise_label, resolve_labels

logger = logging.getLogger(__name__)

#: HTTP statuses worth another try: rate limit, request timeout and gateway/server errors.
TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_TRANSIENT_NAMES = frozenset({  # matched along each exception's class hierarchy (builtins included)
    "TimeoutError", "ReadTimeout", "ConnectTimeout", "Timeout", "ReadTimeoutError", "ConnectTimeoutError", "ProtocolError",
    "ChunkedEncodingError", "IncompleteRead", "RemoteDisconnected", "ProxyError", "SSLError", "TimeoutException",
    "ConnectionError", "ConnectError", "NetworkError", "ReadError", "RemoteProtocolError", "WriteTimeout", "PoolTimeout",
})
_TRANSIENT_TEXT = ("429", "too many requests", "rate limit", "timed out", "timeout", "temporarily unavailable",
                   "connection reset", "connection aborted", "502 bad gateway", "503 service", "504 gateway")


class DownloadError(RuntimeError):
    """A dataset could not be had; the message names it and says why."""

    def __init__(self, name: str, attempts: int, cause: BaseException):
        self.name, self.attempts = name, attempts
        why = f"{type(cause).__name__}: {str(cause).strip().splitlines()[0][:300] if str(cause).strip() else ''}"
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        super().__init__(f"could not download {name}{tries}: {why}")


@dataclass
class RetryPolicy:
    """Exponential backoff: wait ``initial_wait * factor**(k-1)`` (capped at ``max_wait``,
    plus up to ``jitter`` of itself at random) after the k-th failed attempt."""

    max_attempts: int = 6
    initial_wait: float = 10.0
    max_wait: float = 300.0
    factor: float = 2.0
    jitter: float = 0.1

    def wait(self, attempt: int, rng: random.Random | None = None) -> float:
        base = min(self.initial_wait * self.factor ** (attempt - 1), self.max_wait)
        return base + (rng or random).uniform(0, self.jitter * base) if self.jitter else base


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _exception_chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _status_code(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None) or getattr(exc, "status_code", None)
    return code if isinstance(code, int) else None


def is_transient(exc: BaseException) -> bool:
    """True for errors that another try may cure: rate limits, time-outs, dropped connections.

    Missing datasets, permission and format errors are permanent and fail at once; so
    does everything in offline mode (``HF_HUB_OFFLINE=1``), where waiting cannot help.
    """
    if _offline():
        return False
    for e in _exception_chain(exc):
        code = _status_code(e)
        if code is not None:
            return code in TRANSIENT_STATUS
        if any(cls.__name__ in _TRANSIENT_NAMES for cls in type(e).__mro__):
            return True
        if type(e).__name__ in ("DatasetNotFoundError", "FileNotFoundError", "PermissionError", "GatedRepoError",
                                "RepositoryNotFoundError", "ValueError"):
            return False
    text = str(exc).lower()
    return any(t in text for t in _TRANSIENT_TEXT)


def _retry_after(exc: BaseException) -> float | None:
    """The server's ``Retry-After`` seconds on the failed response, if it sent one."""
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    try:
        return float(headers.get("Retry-After") or headers.get("retry-after"))
    except (TypeError, ValueError, AttributeError):
        return None


def call_with_retries(fn: Callable[[], Any], name: str, policy: RetryPolicy = RetryPolicy(),
                      sleep: Callable[[float], None] = time.sleep, log: Callable[[str], None] | None = None) -> tuple[Any, int]:
    """Run ``fn`` until it succeeds; returns ``(result, attempts)``.

    Transient errors are retried up to ``policy.max_attempts`` times in all, waiting
    as the policy says (longer if the server sent ``Retry-After``); anything else, or
    the last failure, raises ``DownloadError`` naming ``name``.
    """
    log = log or logger.warning
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn(), attempt
        except KeyboardInterrupt:
            raise
        except Exception as e:
            if not is_transient(e) or attempt >= policy.max_attempts:
                raise DownloadError(name, attempt, e) from e
            wait = policy.wait(attempt)
            hinted = _retry_after(e)
            if hinted is not None:
                wait = min(max(wait, hinted), policy.max_wait)
            log(f"{name}: {type(e).__name__}: {str(e).strip()[:160]} (attempt {attempt}/{policy.max_attempts}); retrying in {wait:.0f}s")
            sleep(wait)


# --------------------------------------------------------------------------- labels
# LABEL_COLUMN (from bitmind.data.sources): the column read here is the one an hf: spec reads


def parse_label_map(items: list[str] | None) -> dict[str, str]:
    """``["Real=real", "AI=fake"]`` -> ``{"real": "real", "ai": "fake"}`` (keys normalised as
    label names are). Raises ``ValueError`` for an item that is not ``VALUE=real|fake``."""
    out: dict[str, str] = {}
    for item in items or []:
        value, eq, cls = item.rpartition("=")
        if not eq or not value.strip() or cls.strip().lower() not in CLASSES:
            raise ValueError(f"--label_map wants VALUE=real or VALUE=fake, got {item!r}")
        out[normalise_label(value)] = cls.strip().lower()
    return out


def _label_map_arg(item: str) -> str:
    try:
        parse_label_map([item])
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return item


def _is_image_folder(p: Path) -> bool:
    """A local path in the CLASS/SOURCE layout (read as ``LocalFolderSource``), not Hugging Face data."""
    return p.is_dir() and any((p / c).is_dir() for c in CLASSES)


def _local_hf_with_labels(target: "Target") -> bool:
    """A local target read as a Hugging Face dataset whose classes come from a label column."""
    p = Path(target.path)
    return target.local and target.role is None and p.exists() and not _is_image_folder(p) and _looks_like_hf_data(p)


def label_problem(targets: list["Target"], split: str = "train", label_map: dict[str, str] | None = None,
                  cache_dir: str | None = None) -> str | None:
    """The first local dataset whose labels cannot be resolved, as a one-line message, else None.
    Checked before any download; a dataset that cannot be opened at all is left to
    ``summarise_local``, which reports it as that dataset's failure. Parquet/arrow files are
    opened with ``cache_dir`` (see ``summarise_local``)."""
    from bitmind.data.sources import open_hf_dataset

    for t in targets:
        if not _local_hf_with_labels(t):
            continue
        try:
            ds = open_hf_dataset(t.path, split=split, cache_dir=cache_dir)
        except Exception:
            continue
        if LABEL_COLUMN not in ds.column_names:
            continue
        try:
            resolve_labels(ds, LABEL_COLUMN, label_map, name=t.path)
        except LabelError as e:
            return str(e)
    return None


# --------------------------------------------------------------------------- what to fetch


@dataclass
class Target:
    """One ``--datasets`` item: a hub dataset (catalog or not) or a local path."""

    spec: str
    path: str
    role: str | None
    local: bool
    entry: CatalogEntry | None = None


def parse_target(spec: str) -> Target:
    """``NAME_OR_PATH[:real|:fake]`` -> Target. Existing paths (or ones written as paths,
    starting with / . ~) are local; anything else is a hub id, looked up in the catalog."""
    path, role = spec, None
    head, _, tail = spec.rpartition(":")
    if head and tail in CLASSES:
        path, role = head, tail
    expanded = os.path.expanduser(path)
    if os.path.exists(expanded) or path.startswith(("/", ".", "~")):
        return Target(spec, expanded, role, local=True)
    entry = find_entry(path)
    if entry is not None:
        return Target(spec, entry.path, role or entry.role, local=False, entry=entry)
    return Target(spec, path, role, local=False)


# --------------------------------------------------------------------------- outcomes


@dataclass
class Outcome:
    name: str
    kind: str  # "hub" or "local"
    ok: bool
    role: str | None = None
    attempts: int = 0
    error: str | None = None
    summary: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def download_one(target: Target, cache_dir: str | None = None, download_mode: str = "reuse_dataset_if_exists",
                 split: str | None = None, policy: RetryPolicy = RetryPolicy(), sleep: Callable[[float], None] = time.sleep,
                 log: Callable[[str], None] | None = None) -> Outcome:
    """Fetch one hub dataset into the cache (``datasets.load_dataset``), with retries."""
    import datasets  # looked up at call time, so tests can monkeypatch datasets.load_dataset

    kwargs: dict[str, Any] = {"cache_dir": cache_dir, "download_mode": download_mode}
    if target.entry is not None and target.entry.name:
        kwargs["name"] = target.entry.name
    if split:
        kwargs["split"] = split
    out = Outcome(name=target.path, kind="hub", ok=False, role=target.role)
    try:
        ds, out.attempts = call_with_retries(lambda: datasets.load_dataset(target.path, **kwargs), target.path, policy, sleep, log)
    except DownloadError as e:
        out.attempts, out.error = e.attempts, str(e)
        return out
    out.ok = True
    splits = ds if hasattr(ds, "keys") else {split or "train": ds}
    out.summary = {"splits": {k: len(v) for k, v in splits.items()}}
    column = target.entry.image_column if target.entry else "image"
    for k, v in splits.items():
        cols = list(getattr(v, "column_names", []) or [])
        if cols and column not in cols:
            out.warnings.append(f"split {k!r} has no column {column!r} (columns: {cols})")
    return out


def _looks_like_hf_data(p: Path) -> bool:
    if p.is_file():
        return p.suffix in (".parquet", ".arrow")
    markers = ("dataset_dict.json", "dataset_info.json", "state.json")
    return any((p / m).exists() for m in markers) or any(p.glob("**/*.parquet"))


def _holds_pictures(p: Path) -> bool:
    """A folder with picture files in it (at any depth): what ``datasets`` reads as an image
    folder, as ``hf:PATH:fake`` does in training and evaluation."""
    from bitmind.data.sources import IMAGE_EXTENSIONS

    return p.is_dir() and any(f.suffix.lower() in IMAGE_EXTENSIONS for f in p.rglob("*") if f.is_file())


def summarise_local(target: Target, split: str = "train", verify: int = 8,
                    label_map: dict[str, str] | None = None, cache_dir: str | None = None) -> Outcome:
    """Validate a local source and summarise it (no download).

    A folder with ``real/`` or ``fake/`` subfolders is read as ``LocalFolderSource``;
    anything else as a Hugging Face dataset on disk (``save_to_disk`` folder or parquet
    files) through ``HFDatasetSource``: with a role (``PATH:real``) every row has it,
    else the ``label`` column gives each row's class (``resolve_labels``: ClassLabel names,
    strings, 0 real / 1 fake, ``label_map``), and the mapping used is in the summary.
    Up to ``verify`` images per source are decoded. Parquet/arrow files are converted to an
    Arrow cache by ``datasets``: it goes to ``cache_dir`` (``--cache_dir``), as hub downloads do,
    or, when None, to the library default (~/.cache/huggingface), so that an operator's
    ``--cache_dir`` on a small system disk is honoured for local data too.
    """
    from bitmind.data.sources import LocalFolderSource, open_hf_dataset, open_hf_source

    out = Outcome(name=target.path, kind="local", ok=False, role=target.role)
    p = Path(target.path)
    try:
        if not p.exists():
            raise FileNotFoundError(f"no such file or folder: {target.path}")
        if _is_image_folder(p):
            src = LocalFolderSource(p)
            out.summary["format"] = "folder"
            if target.role is not None:  # the folders decide: said, not ignored in silence
                out.warnings.append(f":{target.role} is ignored for {target.path}: in the CLASS/SOURCE layout its "
                                    "real/ and fake/ folders give each picture's class")
        elif not _looks_like_hf_data(p) and not (target.role is not None and _holds_pictures(p)):
            # a folder of pictures with a role is read as ``hf:PATH:ROLE`` reads it (an image folder)
            if _holds_pictures(p):
                raise ValueError(f"{target.path} is a folder of pictures that says nothing of their class: give it, "
                                 f"{target.path}:real or {target.path}:fake, or lay it out in CLASS/SOURCE folders "
                                 "(real/..., fake/...)")
            raise ValueError(f"{target.path} is neither an image folder in the CLASS/SOURCE layout (real/..., fake/...) "
                             "nor a Hugging Face dataset on disk (save_to_disk folder, parquet or arrow files), "
                             "nor a folder of pictures")
        else:
            ds = open_hf_dataset(str(p), split=split, cache_dir=cache_dir)
            out.summary["format"] = "hf"
            out.summary["columns"] = list(ds.column_names)
            # the classes as an hf: spec of this path would read them (one rule: open_hf_source):
            # the label column without a role, else the role (warned where the column disagrees);
            # neither is a LabelError, as it is for the spec
            src = open_hf_source(str(p), role=target.role, label_map=label_map, dataset=ds)
            if target.role is None:
                out.summary["labels"] = src.label_mapping
    except LabelError as e:
        out.error = str(e)
        return out
    except Exception as e:
        out.error = f"invalid local source {target.path}: {type(e).__name__}: {e}"
        return out
    by_source: dict[str, list[int]] = {}
    for i in range(len(src)):
        by_source.setdefault(src.source_name(i), []).append(i)
    chosen = [i for idx in by_source.values() for i in (idx if verify < 0 else idx[:verify])]
    checked, bad = len(chosen), []
    for i in chosen:
        try:
            src.load(i)
        except Exception as e:  # any decoding problem is what we are looking for
            bad.append(f"{src.describe(i)}: {type(e).__name__}: {e}")
    labels = [src.label(i) for i in range(len(src))]
    out.summary.update(n=len(src), n_real=labels.count(0), n_fake=labels.count(1),
                       per_source={k: len(v) for k, v in sorted(by_source.items())}, checked=checked, unreadable=len(bad))
    if bad:
        out.warnings.extend(f"unreadable: {b}" for b in bad[:10])
        if checked and len(bad) == checked:
            out.error = f"invalid local source {target.path}: none of the {checked} checked images could be read"
            return out
    out.ok = True
    return out


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bitmind.download_data", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", metavar="NAME",
                    help="catalog names (hub id or short name), other hub ids, or local paths; "
                         "append :real or :fake to set the role. Default: the whole catalog")
    ap.add_argument("--role", choices=sorted(CLASSES), help="only catalog datasets of this role")
    ap.add_argument("--cache_dir", default=os.environ.get("HF_DATASETS_CACHE"),
                    help="datasets cache folder (default: $HF_DATASETS_CACHE or the datasets default)")
    ap.add_argument("--force_redownload", action="store_true", help="download again even if cached (download_mode=force_redownload)")
    ap.add_argument("--split", default=None, help="only this split (default: all splits of hub datasets; 'train' for local HF data)")
    ap.add_argument("--max_retries", type=int, default=6, help="attempts per dataset for transient errors (default 6)")
    ap.add_argument("--initial_wait", type=float, default=10.0, help="first backoff wait in seconds (doubles each retry)")
    ap.add_argument("--max_wait", type=float, default=300.0, help="longest single backoff wait in seconds")
    ap.add_argument("--verify", type=int, default=8, help="local sources: images decoded per source (-1: all)")
    ap.add_argument("--label_map", nargs="+", metavar="VALUE=CLASS", type=_label_map_arg,
                    help="local Hugging Face data read by its 'label' column: read these label values (or "
                         "ClassLabel names) as real or fake, e.g. --label_map Real=real AI=fake; overrides the "
                         "built-in names (real/authentic/human/natural/photo, fake/ai/generated/synthetic/"
                         "ai-generated, case-insensitive) and 0 real / 1 fake")
    ap.add_argument("--json", metavar="PATH", help="also write the outcomes as JSON")
    ap.add_argument("--list", action="store_true", help="print the catalog and exit")
    return ap


def format_catalog() -> str:
    lines = [f"{'dataset':<32} {'role':<5} {'split':<6} {'column':<7} notes"]
    lines += [f"{e.path:<32} {e.role:<5} {e.split:<6} {e.image_column:<7} {e.notes}" for e in CATALOG]
    return "\n".join(lines)


def select_targets(names: list[str] | None, role: str | None) -> list[Target]:
    if names:
        targets = [parse_target(n) for n in names]
    else:
        targets = [Target(e.path, e.path, e.role, local=False, entry=e) for e in CATALOG]
    if role:
        targets = [t for t in targets if t.role == role]
    return targets


def _describe(o: Outcome) -> str:
    if not o.ok:
        return f"FAILED  {o.name}: {o.error}"
    s = o.summary
    if o.kind == "hub":
        rows = ", ".join(f"{k}={v}" for k, v in s.get("splits", {}).items())
        return f"ok      {o.name} [{o.role or '?'}] {rows}" + (f" ({o.attempts} attempts)" if o.attempts > 1 else "")
    per = ", ".join(f"{k}={v}" for k, v in s.get("per_source", {}).items())
    labels = ", ".join(f"{k}->{v}" for k, v in s["labels"].items()) if s.get("labels") else ""
    return (f"ok      {o.name} (local {s.get('format')}) {s.get('n')} images: real {s.get('n_real')}, fake {s.get('n_fake')}; "
            f"{per}; " + (f"labels {labels}; " if labels else "") + f"decoded {s.get('checked')} ({s.get('unreadable')} unreadable)")


def run(targets: list[Target], cache_dir: str | None = None, force_redownload: bool = False, split: str | None = None,
        policy: RetryPolicy = RetryPolicy(), verify: int = 8, sleep: Callable[[float], None] = time.sleep,
        progress: bool = True, label_map: dict[str, str] | None = None) -> list[Outcome]:
    """Download or validate every target in turn, never stopping at a failure."""
    from tqdm import tqdm

    mode = "force_redownload" if force_redownload else "reuse_dataset_if_exists"
    if cache_dir:
        os.makedirs(cache_dir, exist_ok=True)
    outcomes = []
    bar = tqdm(targets, desc="datasets", unit="ds", disable=not progress, file=sys.stderr)
    for t in bar:
        bar.set_postfix_str(t.path[-40:])
        if t.local:
            o = summarise_local(t, split=split or "train", verify=verify, label_map=label_map, cache_dir=cache_dir)
        else:
            o = download_one(t, cache_dir, mode, split, policy, sleep, log=tqdm.write)
        for w in o.warnings:
            tqdm.write(f"warning: {o.name}: {w}", file=sys.stderr)
        tqdm.write(_describe(o), file=sys.stderr if not o.ok else sys.stdout)
        outcomes.append(o)
    return outcomes


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        print(format_catalog())
        return 0
    if args.max_retries < 1:
        print("--max_retries must be at least 1", file=sys.stderr)
        return 2
    targets = select_targets(args.datasets, args.role)
    if not targets:
        print("nothing to do: no dataset matches", file=sys.stderr)
        return 2
    problem = output_path_problem(args.json, "--json") or output_path_problem(args.cache_dir, "--cache_dir", folder=True)
    if problem:  # before the downloads, not after them
        print(f"error: {problem}", file=sys.stderr)
        return 2
    label_map = parse_label_map(args.label_map)
    problem = label_problem(targets, args.split or "train", label_map, args.cache_dir)
    if problem:  # labels that cannot be told real or fake: before any download or file
        print(f"error: {problem}", file=sys.stderr)
        return 2
    policy = RetryPolicy(max_attempts=args.max_retries, initial_wait=args.initial_wait, max_wait=args.max_wait)
    outcomes = run(targets, args.cache_dir, args.force_redownload, args.split, policy, args.verify, label_map=label_map)
    failed = [o for o in outcomes if not o.ok]
    print(f"\n{len(outcomes) - len(failed)} of {len(outcomes)} datasets ready"
          + (f"; cache: {args.cache_dir}" if args.cache_dir else ""))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps([asdict(o) for o in outcomes], indent=2))
    if failed:
        print("failed: " + ", ".join(o.name for o in failed), file=sys.stderr)
        for o in failed:
            print(f"  {o.name}: {o.error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Write a benchmark's result (the JSON, and its markdown table beside it), and read one back.

Many scripts under ``benchmarks/`` end the same way: the result as JSON at ``--out`` and the
table they print as ``<stem>.md`` next to it. The scripts are not part of the package and do
not import each other, so the one writer they share lives here, with the reader of a result
one script takes from another (``read_report``) and the whole-file ``.npz`` writer
(``save_npz``) of the scripts that cache arrays.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def report_path(value: str) -> str:
    """An ``argparse`` type for a script's ``--out``: refuse, as a usage error before any work,
    a name ending in ``.md``, where the markdown table beside the JSON goes (``write_report``
    would refuse it only once the work is done). ``""`` (no report) passes."""
    if Path(value).suffix.lower() == ".md":
        raise argparse.ArgumentTypeError(f"{value}: the JSON's name ends in .md, where its markdown table goes; "
                                         "name it .json")
    return value


def write_report(out: str | Path, result: dict, markdown: str, indent: int = 2, trailing_newline: bool = False) -> Path:
    """Write ``result`` as JSON to ``out`` (creating its folder) and ``markdown`` to the ``.md``
    of the same stem beside it; return the ``.md`` path.

    ``indent`` is ``json.dumps``'s; ``trailing_newline`` ends the JSON with a newline. Both
    files are UTF-8 whatever the locale (the tables hold "±" and dashes). Each is written whole
    (a temporary file beside it, then renamed over it), so a result another script reads is the
    old one or the new one, never half. An ``out`` ending in ``.md`` is refused: its table would
    overwrite the JSON.
    """
    out = Path(out)
    if out.suffix.lower() == ".md":
        raise ValueError(f"{out}: the JSON's name ends in .md, where its markdown table goes; name it .json")
    from bitmind.atomic_files import atomic_write_text  # UTF-8, whole: a Ctrl-C or crash mid-write leaves the old file

    atomic_write_text(out, json.dumps(result, indent=indent) + ("\n" if trailing_newline else ""))
    md_path = out.with_suffix(".md")
    atomic_write_text(md_path, markdown)
    return md_path


def read_report(path: str | Path, key: str, producer: str, label: str | None = None) -> dict:
    """The JSON result at ``path`` that ``producer`` (a script's name) wrote, known by its
    top-level ``key``; a ValueError that starts with ``label`` (default: the path) and says
    what is wrong when it cannot be read, is not JSON, or is not such a result. For the
    script reading it to turn into a one-line usage error."""
    label = str(path) if label is None else label
    try:
        result = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{label}: {e}") from e
    if not isinstance(result, dict) or key not in result:
        raise ValueError(f"{label}: not a {producer} result (no {key!r})")
    return result


def save_npz(path: str | Path, arrays: dict) -> Path:
    """``arrays`` as the compressed ``.npz`` ``path`` (``.npz`` added to a name without it, as
    ``np.savez_compressed`` adds it), written whole (``atomic_write``: a temporary file beside
    it, then renamed over it), so a crash or a Ctrl-C mid-write leaves the old file as it was,
    never a truncated one for a later step to read. The temporary file is written through an
    open file, so ``np.savez_compressed`` does not add ``.npz`` to its name."""
    import numpy as np

    from bitmind.atomic_files import atomic_write

    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)

    return atomic_write(path, write)

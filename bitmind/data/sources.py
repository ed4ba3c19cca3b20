"""Image sources for training and evaluation: local folders and Hugging Face datasets.

Both kinds expose the same small interface, so the trainer, ``bitmind.eval`` and the
validator do not care where pixels come from:

* ``len(source)``; ``source.label(i)`` (0 real, 1 fake); ``source.source_name(i)``;
  ``source.stem(i)`` (the id of the *source picture*: crops of one picture share it);
  ``source.load(i)`` -> RGB PIL image (raises on unreadable data).

Local layout: ``ROOT/CLASS/SOURCE/*.{jpg,jpeg,png,webp,...}`` with CLASS in {real, fake}.
"""
from __future__ import annotations

import logging
import numbers
import os
import shlex
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from bitmind.image_io import load_image_file, _to_rgb

logger = logging.getLogger(__name__)

CLASSES = {"real": 0, "fake": 1}
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
_CROP_SUFFIX = re.compile(r"_\d+$")


def stem_of(filename: str) -> str:
    """``photo_1.jpg`` -> ``photo``: crops of one picture share their stem."""
    return _CROP_SUFFIX.sub("", Path(filename).stem)


def unique_roots(data: Sequence[str | os.PathLike]) -> list:
    """``data`` without a folder given twice (``d`` and ``d/``, or a relative and an absolute
    path): each of its pictures would count twice in every figure. Warned about."""
    seen, out = set(), []
    for d in data:
        key = str(Path(d).expanduser().resolve()) if not str(d).startswith("hf:") else str(d)
        if key in seen:
            logger.warning("data root %s is given more than once; read once", d)
            continue
        seen.add(key)
        out.append(d)
    return out


def warn_on_numbered_names(entries, root) -> None:
    """Warn about a source whose file names all collapse to one or two picture stems: a name
    ending in ``_<number>`` is read as a crop of one picture (``stem_of``), and all crops of a
    picture share a split, so camera or generator output numbered ``IMG_0001.jpg``,
    ``IMG_0002.jpg``, ... falls into one split whole (no validation or test pictures from it)."""
    files: dict[str, int] = {}
    stems: dict[str, set] = {}
    for e in entries:
        files[e.source] = files.get(e.source, 0) + 1
        stems.setdefault(e.source, set()).add(e.stem)
    for source, n in files.items():
        if n >= NUMBERED_MIN_FILES and len(stems[source]) <= max(2, n // NUMBERED_MIN_FILES):
            logger.warning("%s: source %s has %d images but only %d picture stem(s): names ending in _<number> are "
                           "read as crops of one picture, which share a split, so nearly all of it falls in one split; "
                           "rename separate pictures so they do not end in _<number> (e.g. IMG-0001.jpg)",
                           root, source, n, len(stems[source]))


#: A source of at least this many images with at most one stem per this many images is warned
#: about (the shipped pools: at most 14.5 images per stem, flux1-schnell's prompts).
NUMBERED_MIN_FILES = 50


class ImageSource:
    """Interface shared by local-folder and Hugging Face sources."""

    name: str = "source"

    def __len__(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def label(self, i: int) -> int:  # pragma: no cover
        raise NotImplementedError

    def source_name(self, i: int) -> str:  # pragma: no cover
        raise NotImplementedError

    def stem(self, i: int) -> str:  # pragma: no cover
        raise NotImplementedError

    def load(self, i: int) -> Image.Image:  # pragma: no cover
        raise NotImplementedError

    def describe(self, i: int) -> str:
        return f"{self.name}[{i}]"


@dataclass(frozen=True)
class _FileEntry:
    path: str
    label: int
    source: str
    stem: str


def _is_image(f: Path) -> bool:
    """A picture file a folder source reads (by extension; hidden files left out)."""
    return f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith(".")


class LocalFolderSource(ImageSource):
    """``ROOT/{real,fake}/SOURCE/*`` images. SOURCE becomes ``class/source`` in reports.
    Images right under ``ROOT/real`` or ``ROOT/fake`` (the image-folder layout many tools
    write) are one more source, named after the root (``real/ROOT``): they used to be
    left out without a word, so a run could train on one class believing it had both."""

    def __init__(self, root: str | os.PathLike, classes: dict[str, int] = CLASSES):
        self.root = Path(root).expanduser()
        if self.root.exists() and not self.root.is_dir():  # a model file given as --data, say: it is there
            raise FileNotFoundError(f"data folder {self.root} is a file, not a folder of real/ and fake/ pictures")
        if not self.root.is_dir():
            raise FileNotFoundError(f"data folder not found: {self.root}")
        self.name = self.root.name
        entries: list[_FileEntry] = []
        for cls, label in classes.items():
            cdir = self.root / cls
            if not cdir.is_dir():
                continue
            loose = [f for f in sorted(cdir.iterdir()) if _is_image(f)]
            if loose:
                logger.info("%s: %d images right under %s/ read as source %s/%s", self.root, len(loose), cls, cls, self.name)
                entries += [_FileEntry(str(f), label, f"{cls}/{self.name}", stem_of(f.name)) for f in loose]
            for sdir in sorted(p for p in cdir.iterdir() if p.is_dir() and not p.name.startswith(".")):
                for f in sorted(sdir.rglob("*")):
                    # hidden folders (.thumbnails/, .cache/) hold previews, not pictures of the source
                    if _is_image(f) and not any(part.startswith(".") for part in f.relative_to(sdir).parts):
                        entries.append(_FileEntry(str(f), label, f"{cls}/{sdir.name}", stem_of(f.name)))
        others = sorted(p.name for p in self.root.iterdir() if p.is_dir() and p.name not in classes
                        and not p.name.startswith("."))
        if others:  # e.g. Fake/ or reals/: read as nothing, so a run could see one class only
            logger.warning("%s: folder(s) %s are not read (the class folders are %s, in lower case)", self.root,
                           ", ".join(f"{o}/" for o in others), " and ".join(f"{c}/" for c in classes))
        if not entries:
            raise ValueError(f"no images under {self.root} (expected {self.root}/{{real,fake}}/SOURCE/*.jpg)")
        self.entries = entries
        warn_on_numbered_names(entries, self.root)

    def __len__(self):
        return len(self.entries)

    def label(self, i):
        return self.entries[i].label

    def source_name(self, i):
        return self.entries[i].source

    def stem(self, i):
        return self.entries[i].stem

    def path(self, i) -> str:
        return self.entries[i].path

    def load(self, i):
        return load_image_file(self.entries[i].path)

    def describe(self, i):
        return self.entries[i].path


#: Label names (ClassLabel names or string values) read as each class. Compared after
#: ``normalise_label``: case-insensitive, surrounding blanks dropped, ``_`` and inner blanks read as ``-``.
LABEL_NAMES = {
    "real": frozenset({"real", "authentic", "human", "natural", "photo"}),
    "fake": frozenset({"fake", "ai", "generated", "synthetic", "ai-generated"}),
}


class LabelError(ValueError):
    """Labels of a dataset that cannot be told real or fake; the message is one line."""


def normalise_label(value) -> str:
    """How label names and ``--label_map`` keys are compared: ``' AI_generated'`` -> ``ai-generated``."""
    return "-".join(str(value).strip().lower().replace("_", " ").split())


def resolve_labels(dataset, column: str = "label", label_map: dict[str, str] | None = None,
                   name: str = "dataset") -> tuple[list[int], dict[str, str]]:
    """The class of every row of ``dataset`` (0 real, 1 fake, as ``bitmind.data.CLASSES``)
    from its ``column``, and the mapping used (``{value as written: "real"|"fake"}``).

    * a ``datasets.ClassLabel`` column is read by its *names*, not its indices, so
      ``names=["fake", "real"]`` (0 = fake) comes out right;
    * string values are read the same way;
    * a name or string is matched case-insensitively against ``LABEL_NAMES``:
      real / authentic / human / natural / photo -> real;
      fake / ai / generated / synthetic / ai-generated -> fake
      (``_`` and blanks count as ``-``: ``AI_generated``, ``ai generated``);
    * integers (booleans, whole floats such as ``1.0``, and names or strings ``"0"`` / ``"1"``)
      keep the package's convention: 0 real, 1 fake;
    * ``label_map`` (``parse_label_map`` of ``--label_map``) comes first and overrides all of
      the above; its keys are label names or values as written (``0`` also matches ``0.0``
      and ``False``; ``true`` / ``false`` match booleans), and for a ClassLabel the index works
      too, unless another class is named by that number.

    Any value present that none of these maps (``"unknown"``, ``2``, a missing label: None or
    NaN) raises ``LabelError`` naming the values found (the first ten) and how to map them;
    nothing is guessed. The column is read through Arrow where it can be (a million labels
    in milliseconds).
    """
    import datasets

    label_map = label_map or {}
    feature = getattr(dataset, "features", {}).get(column)
    names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
    name_keys = {normalise_label(n) for n in names or ()}

    def key_of(v):  # one key per label value: None for a missing label (None, NaN), whole numbers as ints
        if v is None or (isinstance(v, float) and v != v):
            return None
        if isinstance(v, bool) or (isinstance(v, numbers.Real) and not isinstance(v, int) and float(v).is_integer()):
            return int(v)
        try:
            hash(v)
        except TypeError:  # a list or dict where a label should be: shown as text, never mapped by default
            return str(v)
        return v

    def shown(k) -> str:  # how a value is written in the summary and in errors
        if names is not None and isinstance(k, int) and 0 <= k < len(names):
            return names[k]
        return "None" if k is None else str(k)

    def classify(k, was_bool: bool) -> str | None:
        if k is None:
            return None
        candidates = [normalise_label(shown(k))]
        if names is not None and isinstance(k, int) and str(k) not in name_keys:
            candidates.append(str(k))  # a ClassLabel's index, unless it reads as another class's name
        if was_bool:
            candidates.append("true" if k else "false")
        for c in candidates:
            if c in label_map:
                return label_map[c]
        text = normalise_label(shown(k))
        by_name = next((cls for cls, words in LABEL_NAMES.items() if text in words), None)
        if by_name is not None or (names is None and not isinstance(k, (int, str))):
            return by_name
        return {"0": "real", "1": "fake"}.get(text)  # 0 real, 1 fake: integers, and names or strings "0" / "1"

    raw = _column_values(dataset, column)
    keys = [key_of(v) for v in raw]
    found: dict = {}
    for k, v in zip(keys, raw):
        if k not in found:
            found[k] = classify(k, isinstance(v, bool))
    bad = [k for k, cls in found.items() if cls is None]
    if bad:
        def listed(ks):
            ks = list(ks)
            head = ", ".join(repr(shown(k)) if k is not None else "None" for k in ks[:10])
            return head + (f" and {len(ks) - 10} more" if len(ks) > 10 else "")

        example = next((shown(k) for k in bad if k is not None and shown(k) and not shown(k).startswith("-")), None)
        example = f" (e.g. --label_map {shlex.quote(example + '=real')} or {shlex.quote(example + '=fake')})" if example else ""
        raise LabelError(
            f"{name}: cannot tell real from fake for {column!r} value(s) {listed(bad)} (values found: {listed(found)}); "
            f"map them with --label_map VALUE=real|fake{example}, "
            f"or give the whole dataset one class by appending :real or :fake to its path")
    labels = [CLASSES[found[k]] for k in keys]
    return labels, {shown(k): cls for k, cls in found.items()}


def _column_values(dataset, column: str) -> list:
    """A column's values in row order: through Arrow where the dataset is a plain table (~10 ms
    for a million labels; row by row it took ~8 s), else row by row."""
    try:
        if getattr(dataset, "_indices", None) is None:
            return dataset.data.column(column).to_pylist()
    except Exception:  # noqa: BLE001 - not an Arrow-backed dataset: read it the plain way
        pass
    return list(dataset[column])


class HFDatasetSource(ImageSource):
    """A Hugging Face dataset (hub name, ``save_to_disk`` folder, or parquet/arrow files)
    whose every image has one role (real or fake), or a label column (read by
    ``resolve_labels``: ClassLabel names, strings, 0 real / 1 fake, ``label_map``).

    Loaded through ``datasets`` only; nothing is downloaded unless the name is a hub id
    and the cache lacks it (``bitmind.download_data`` fills the cache ahead of time).
    """

    def __init__(self, path: str, role: str | None = "fake", split: str = "train", image_column: str = "image",
                 label_column: str | None = None, id_column: str | None = None, cache_dir: str | None = None,
                 name: str | None = None, dataset=None, label_map: dict[str, str] | None = None):
        if role is not None and role not in CLASSES:
            raise ValueError(f"role must be one of {list(CLASSES)}, got {role!r}")
        if dataset is None:
            dataset = open_hf_dataset(path, split=split, cache_dir=cache_dir)
        if image_column not in dataset.column_names:
            raise ValueError(f"dataset {path} has no column {image_column!r} (columns: {dataset.column_names})")
        self.ds, self.role, self.image_column = dataset, role, image_column
        self.label_column, self.id_column = label_column, id_column
        self.name = name or str(path).rstrip("/").split("/")[-1]
        if label_column is None and role is None:
            raise ValueError("give a role (real/fake) or a label column")
        self._labels, self.label_mapping = (resolve_labels(dataset, label_column, label_map, name=str(path))
                                            if label_column else (None, None))
        self._ids = [str(x) for x in dataset[id_column]] if id_column else None

    def __len__(self):
        return len(self.ds)

    def label(self, i):
        if self._labels is not None:
            return self._labels[i]
        return CLASSES[self.role]

    def source_name(self, i):
        return f"{'fake' if self.label(i) else 'real'}/{self.name}"

    def stem(self, i):
        return self._ids[i] if self._ids is not None else f"{self.name}:{i}"

    def load(self, i):
        img = self.ds[i][self.image_column]
        if isinstance(img, dict) and img.get("bytes") is not None:
            from bitmind.image_io import open_image

            return open_image(img["bytes"])
        if isinstance(img, (str, os.PathLike)):
            return load_image_file(img)
        if not isinstance(img, Image.Image):
            raise ValueError(f"row {i} of {self.name} has no image ({type(img).__name__})")
        return _to_rgb(img)


def open_hf_dataset(path: str, split: str = "train", cache_dir: str | None = None):
    """Open a dataset from a ``save_to_disk`` folder, parquet/arrow files or the Hub cache."""
    import datasets

    p = Path(path).expanduser()
    if p.is_dir() and (p / "dataset_dict.json").exists():
        return datasets.load_from_disk(str(p))[split]
    if p.is_dir() and ((p / "dataset_info.json").exists() or (p / "state.json").exists()):
        return datasets.load_from_disk(str(p))
    if p.is_file() and p.suffix in (".parquet", ".arrow"):
        return datasets.load_dataset(p.suffix[1:], data_files=str(p), split=split, cache_dir=cache_dir)
    if p.is_dir() and any(p.glob("**/*.parquet")):
        return datasets.load_dataset("parquet", data_files=sorted(str(f) for f in p.glob("**/*.parquet")), split=split, cache_dir=cache_dir)
    return datasets.load_dataset(path, split=split, cache_dir=cache_dir)


#: The column a Hugging Face dataset given without a role is read by, by ``hf:PATH`` specs
#: (``open_hf_source``) and by ``bitmind.download_data --datasets PATH`` alike.
LABEL_COLUMN = "label"


def open_hf_source(path: str, role: str | None = None, label_map: dict[str, str] | None = None,
                   label_column: str = LABEL_COLUMN, split: str = "train", cache_dir: str | None = None,
                   dataset=None, **kw) -> HFDatasetSource:
    """A Hugging Face dataset as an ``HFDatasetSource``, its classes decided the one way that
    ``hf:`` specs (training, evaluation, calibration, the validator) and the downloader share:

    * no ``role``: each row's class is read from ``label_column`` by ``resolve_labels``
      (ClassLabel names, strings such as real / fake / ai, 0 real / 1 fake, ``label_map``); its
      two halves are the sources ``real/NAME`` and ``fake/NAME``. Labels that cannot be read are
      a ``LabelError``, and so is a dataset without that column: nothing says which class its
      pictures are (they used to be taken as fake without a word);
    * a ``role``: every row has it. Where the dataset has a readable ``label_column`` that
      disagrees with the role for some rows, a warning names how many (the column is ignored).
    """
    if role is not None and role not in CLASSES:
        raise ValueError(f"role must be one of {list(CLASSES)}, got {role!r}")
    if dataset is None:
        dataset = open_hf_dataset(path, split=split, cache_dir=cache_dir)
    columns = list(getattr(dataset, "column_names", []) or [])
    if role is None:
        if label_column not in columns:
            raise LabelError(
                f"{path}: no role given and no {label_column!r} column to read each picture's class from "
                f"(columns: {', '.join(columns)}); append :real or :fake to give the whole dataset one class "
                f"(hf:{path}:real or hf:{path}:fake)")
        return HFDatasetSource(path, role=None, dataset=dataset, label_column=label_column, label_map=label_map, **kw)
    src = HFDatasetSource(path, role=role, dataset=dataset, **kw)
    if label_column in columns:
        _warn_ignored_labels(src, label_column, label_map)
    return src


def _warn_ignored_labels(src: HFDatasetSource, column: str, label_map: dict[str, str] | None) -> None:
    """Warn when a role given to a dataset overrides the classes its label column says."""
    try:
        labels, _ = resolve_labels(src.ds, column, label_map, name=src.name)
    except LabelError:
        logger.warning("%s: its %r column is ignored because :%s was given: all %d rows are read as %s (the column "
                       "holds values that are not read as real or fake)", src.name, column, src.role, len(src), src.role)
        return
    want = CLASSES[src.role]
    disagree = sum(1 for x in labels if x != want)
    if disagree:
        other = "fake" if src.role == "real" else "real"
        logger.warning("%s: its %r column is ignored because :%s was given: all %d rows are read as %s, but the "
                       "column says %d of them are %s; drop the :%s to read each row's class from the column",
                       src.name, column, src.role, len(src), src.role, disagree, other, src.role)


def split_hf_spec(spec: str) -> tuple[str, str | None] | None:
    """An ``hf:NAME_OR_PATH[:real|fake]`` data spec as (NAME_OR_PATH, role or None); None for a
    spec that is not ``hf:`` (a folder). The one parser of the form, for every command that
    reads, stores or guards a data spec."""
    if not spec.startswith("hf:"):
        return None
    rest, _, last = spec[3:].rpartition(":")
    return (rest, last) if rest and last in CLASSES else (spec[3:], None)


def open_source(spec: str, **kw) -> ImageSource:
    """Parse a data spec from the command line.

    * a folder in the ``CLASS/SOURCE/*`` layout -> LocalFolderSource
    * ``hf:NAME_OR_PATH:real`` / ``:fake`` -> HFDatasetSource whose every row has that role
    * ``hf:NAME_OR_PATH`` -> HFDatasetSource whose rows' classes come from the dataset's
      ``label`` column, read as ``bitmind.download_data`` reads it (``open_hf_source``);
      without such a column, a ``LabelError`` asking for ``:real`` or ``:fake``.

    ``kw`` go to ``open_hf_source`` (``split``, ``label_map``, ``cache_dir`` ...).
    """
    hf = split_hf_spec(spec)
    if hf:
        rest, role = hf
        try:
            return open_hf_source(rest, role=role, **kw)
        except LabelError as e:
            if role is not None or kw.get("label_map") or "--label_map" not in str(e):
                raise
            raise LabelError(f"{e} (--label_map is an option of bitmind.download_data only: an hf: spec takes "
                             f"the built-in label names, or :real / :fake)") from None
    return LocalFolderSource(spec)

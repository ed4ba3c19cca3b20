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
import os
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


class HFDatasetSource(ImageSource):
    """A Hugging Face dataset (hub name, ``save_to_disk`` folder, or parquet/arrow files)
    whose every image has one role (real or fake), or a label column.

    Loaded through ``datasets`` only; nothing is downloaded unless the name is a hub id
    and the cache lacks it (``bitmind.download_data`` fills the cache ahead of time).
    """

    def __init__(self, path: str, role: str | None = "fake", split: str = "train", image_column: str = "image",
                 label_column: str | None = None, id_column: str | None = None, cache_dir: str | None = None,
                 name: str | None = None, dataset=None):
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
        self._labels = list(dataset[label_column]) if label_column else None
        self._ids = [str(x) for x in dataset[id_column]] if id_column else None

    def __len__(self):
        return len(self.ds)

    def label(self, i):
        if self._labels is not None:
            v = self._labels[i]
            return CLASSES[v] if isinstance(v, str) else int(v)
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


def open_source(spec: str, **kw) -> ImageSource:
    """Parse a data spec from the command line.

    * a folder in the ``CLASS/SOURCE/*`` layout -> LocalFolderSource
    * ``hf:NAME_OR_PATH[:real|fake]`` -> HFDatasetSource with that role
    """
    if spec.startswith("hf:"):
        rest = spec[3:]
        role = "fake"
        if rest.rsplit(":", 1)[-1] in CLASSES:
            rest, role = rest.rsplit(":", 1)
        return HFDatasetSource(rest, role=role, **kw)
    return LocalFolderSource(spec)

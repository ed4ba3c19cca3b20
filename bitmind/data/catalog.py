"""The Hugging Face datasets configured for SN34, each with its role, in one place.

``bitmind.download_data`` fills the cache from this list; training and evaluation
read an entry from that cache as ``--data hf:<path>:<role>``.

The names are those the BitMind SN34 subnet used for validator challenges and miner
training: its ``DATASET_META`` listed open-images-v7, ffhq-256 and celeb-a-hq as real
and realvis-xl and stable-diffusion-xl as fake; its later image configs added
MS-COCO-unique-256 (real) and JourneyDB and GenImage_MidJourney (fake). They are the
configured defaults: the Hub may rename, gate or drop a dataset at any time, which the
downloader reports by name rather than failing the whole run.
"""
from __future__ import annotations

from dataclasses import dataclass

from bitmind.data.sources import CLASSES


@dataclass(frozen=True)
class CatalogEntry:
    """One Hub dataset: ``path`` (hub id), ``role`` (``real``/``fake``), the split and
    column holding the image, an optional config ``name`` and a free-text note."""

    path: str
    role: str
    split: str = "train"
    image_column: str = "image"
    name: str | None = None
    notes: str = ""

    def __post_init__(self):
        if self.role not in CLASSES:
            raise ValueError(f"{self.path}: role must be one of {list(CLASSES)}, got {self.role!r}")

    @property
    def short_name(self) -> str:
        return self.path.rstrip("/").split("/")[-1]


CATALOG: tuple[CatalogEntry, ...] = (
    # real photographs
    CatalogEntry("bitmind/open-images-v7", "real", image_column="url",
                 notes="rows carry image URLs, not pixels: usable for challenges online, not for offline training"),
    CatalogEntry("bitmind/celeb-a-hq", "real", notes="faces"),
    CatalogEntry("bitmind/ffhq-256", "real", notes="faces, 256x256"),
    CatalogEntry("bitmind/MS-COCO-unique-256", "real", notes="scenes, 256x256"),
    # AI-generated
    CatalogEntry("bitmind/realvis-xl", "fake", notes="RealVisXL (SDXL fine-tune)"),
    CatalogEntry("bitmind/stable-diffusion-xl", "fake", notes="SDXL base"),
    CatalogEntry("bitmind/JourneyDB", "fake", notes="Midjourney"),
    CatalogEntry("bitmind/GenImage_MidJourney", "fake", notes="GenImage, Midjourney subset"),
)


def find_entry(name: str) -> CatalogEntry | None:
    """The entry whose hub id or short name is ``name`` (case-insensitive), else None."""
    key = name.strip().lower()
    for e in CATALOG:
        if key in (e.path.lower(), e.short_name.lower()):
            return e
    return None

"""Data sources, deterministic splits and the training/evaluation dataset."""
from bitmind.data.dataset import (AsIs, DetectionDataset, FamilySampler, FlipOnly, aligned_partners, balanced_sampler,
                                  class_pos_weight, collate_skip_none)
from bitmind.data.families import GENERATOR_FAMILIES, family_of, family_weights, is_aligned, sources_of_family
from bitmind.data.sources import (CLASSES, HFDatasetSource, ImageSource, LocalFolderSource, open_source, stem_of,
                                  unique_roots)
from bitmind.data.splits import SPLITS, in_subset, split_indices, split_of

__all__ = [
    "AsIs", "CLASSES", "DetectionDataset", "FamilySampler", "FlipOnly", "GENERATOR_FAMILIES", "aligned_partners",
    "family_of", "family_weights", "is_aligned", "sources_of_family", "HFDatasetSource", "ImageSource", "LocalFolderSource", "SPLITS",
    "balanced_sampler", "class_pos_weight", "collate_skip_none", "open_source",
    "in_subset", "split_indices", "split_of", "stem_of", "unique_roots",
]

"""Data sources, deterministic splits and the training/evaluation dataset."""
from bitmind.data.dataset import DetectionDataset, balanced_sampler, class_pos_weight, collate_skip_none
from bitmind.data.sources import CLASSES, HFDatasetSource, ImageSource, LocalFolderSource, open_source, stem_of
from bitmind.data.splits import SPLITS, count_by_source, in_subset, split_indices, split_of

__all__ = [
    "CLASSES", "DetectionDataset", "HFDatasetSource", "ImageSource", "LocalFolderSource", "SPLITS",
    "balanced_sampler", "class_pos_weight", "collate_skip_none", "count_by_source", "open_source",
    "in_subset", "split_indices", "split_of", "stem_of",
]

"""Data: the catalog of dataset manifests, validated loading, holdout and slices."""

from shadow.data.catalog import find_manifest, list_manifests
from shadow.data.loader import Dataset, load_dataset
from shadow.data.manifest import DatasetManifest
from shadow.data.slicing.base import Holdout, Slice, build_strategy, cut_holdout, make_slices

__all__ = [
    "Dataset",
    "DatasetManifest",
    "Holdout",
    "Slice",
    "build_strategy",
    "cut_holdout",
    "find_manifest",
    "list_manifests",
    "load_dataset",
    "make_slices",
]

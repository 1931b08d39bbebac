"""Arrays as artifact bytes: ``.npy``/``.npz`` with pickling disabled.

Holdout rows and per-row predictions travel as content-addressed artifacts so
that ``selection`` can compare candidates row by row (paired tests) and
re-score a champion, without importing the producer that made them.
"""

from __future__ import annotations

import io

import numpy as np

from selection.errors import IntegrityError


def encode_array(array: np.ndarray) -> bytes:
    """``.npy`` bytes of one array (no pickled objects)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def decode_array(data: bytes) -> np.ndarray:
    """The array in ``.npy`` bytes; IntegrityError if they are not one."""
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise IntegrityError(f"artifact is not a .npy array: {exc}") from None


def encode_holdout(features: np.ndarray, labels: np.ndarray) -> bytes:
    """``.npz`` bytes with ``features`` (float32) and ``labels`` (int64)."""
    buffer = io.BytesIO()
    np.savez(
        buffer,
        features=np.ascontiguousarray(features, dtype=np.float32),
        labels=np.ascontiguousarray(labels, dtype=np.int64),
    )
    return buffer.getvalue()


def decode_holdout(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """``(features, labels)`` from :func:`encode_holdout` bytes."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            return archive["features"], archive["labels"]
    except (ValueError, OSError, KeyError) as exc:
        raise IntegrityError(f"artifact is not a holdout .npz: {exc}") from None

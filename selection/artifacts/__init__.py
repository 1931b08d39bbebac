"""Content-addressed files: model artifacts and the arrays (holdouts, predictions) stored beside them.

Owns ``artifacts/<sha256>.<ext>`` under a home and the byte codec for numpy arrays.
May import: ``selection.errors``, ``selection.atomic``. Nothing else in ``selection``.
"""

from selection.artifacts.content import ArtifactStore, check_sha256, sha256_bytes

__all__ = ["ArtifactStore", "check_sha256", "sha256_bytes"]

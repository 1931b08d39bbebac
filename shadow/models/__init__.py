"""Model families by name. Importing this package registers the built-in ones."""

from shadow.models import cnn, mlp  # noqa: F401  (registers the families)
from shadow.models.base import FAMILIES, ModelFamily, WithProbabilities, get_family

__all__ = ["FAMILIES", "ModelFamily", "WithProbabilities", "get_family"]

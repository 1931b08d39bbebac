"""Model families by name (``FAMILIES``), the ``ModelFamily`` contract, training and export.

The built-in families are registered here, in one place and in the order error messages list
them: adding a family is adding its module and one line below.
"""

from shadow.models.base import FAMILIES, ModelFamily, WithProbabilities, get_family
from shadow.models.cnn import CNNFamily
from shadow.models.mlp import MLPFamily

for _family in (CNNFamily, MLPFamily):
    FAMILIES.register(_family())
del _family

__all__ = ["FAMILIES", "ModelFamily", "WithProbabilities", "get_family"]

"""Model families by name (``FAMILIES``), the ``ModelFamily`` contract, training and export.

The built-in families are registered here, in one place and in the order error messages list
them: adding a family is adding its module and one line below. A user's own family is named
by import path instead (``[model] family = "my_pkg.models:MyFamily"``, see
:mod:`shadow.models.external`); ``ModelFamily``, ``Standardize`` and ``TRAINING_PARAMS`` are
what it builds on.
"""

from shadow.models.base import FAMILIES, ModelFamily, Standardize, WithProbabilities
from shadow.models.cnn import CNNFamily
from shadow.models.external import get_family
from shadow.models.mlp import TRAINING_PARAMS, MLPFamily
from shadow.models.prior import PriorFamily

for _family in (CNNFamily, MLPFamily, PriorFamily):
    FAMILIES.register(_family())
del _family

__all__ = ["FAMILIES", "TRAINING_PARAMS", "ModelFamily", "Standardize", "WithProbabilities", "get_family"]

"""Slicing: the holdout (newest rows, cut first) and the slice strategies that pick training rows.

``base`` holds the holdout, the ``SliceStrategy`` contract and its registry (``STRATEGIES``);
``strategies`` the built-in strategies. They are registered here, in one place and in the order
error messages list them: adding a strategy is adding its class and one line below.
"""

from shadow.data.slicing.base import STRATEGIES
from shadow.data.slicing.strategies import (
    AllHistory,
    Bootstrap,
    Expanding,
    Recent,
    Segment,
    Window,
)

for _strategy in (AllHistory, Recent, Window, Bootstrap, Expanding, Segment):
    STRATEGIES.register(_strategy)
del _strategy

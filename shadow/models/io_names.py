"""Names of the exported graph's input and output: the contract with the edge app.

Defined once, in :mod:`selection.signature` (the model signature the manifest
carries); re-exported here so code that only runs models (devices, the CLI)
need not import torch.
"""

from selection.signature import INPUT_NAME, OUTPUT_NAME

__all__ = ["INPUT_NAME", "OUTPUT_NAME"]

"""Names of the exported graph's input and output: the contract with the edge app.

Kept apart from :mod:`shadow.models.export` so code that only runs models (devices,
the CLI) need not import torch.
"""

INPUT_NAME = "features"
OUTPUT_NAME = "probabilities"

"""shadow-sweep, producer side: data, slices, models, the Ray sweep, export, devices, CLI.

Results are written through :mod:`selection`, which can be used on its own.
"""

__version__ = "0.1.0"

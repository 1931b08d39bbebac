"""The ``shadow`` command line; see :mod:`shadow.cli.main`."""

"""MLflow tracking and registry: optional, and imported only where it is used.

``settings`` reads the ``[mlflow]`` table (and ``$MLFLOW_TRACKING_URI``) into
:class:`~selection.tracking.settings.MlflowSettings` with the standard library
only. ``client`` connects (checking the server answers first), ``runs`` writes
one candidate as one MLflow run with its ONNX model (onnx flavour, with a
signature), ``registry`` registers a model version and moves the ``champion``
alias. Only ``client`` imports ``mlflow``, and only inside functions: mlflow is
the ``[mlflow]`` extra, and ``selection.runtime`` (the slim edge install) never
imports this package.

May import: ``selection.errors``, ``selection.records``, ``selection.signature``,
``selection.validation``. Never the store (callers hand it records and bytes), never
``shadow``.
"""

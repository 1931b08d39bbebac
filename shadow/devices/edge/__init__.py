"""The emulated edge accelerator: quantize, compile on Qualcomm's HTP emulator, estimate latency.

``device`` is the ``Device`` that runs a candidate through the rest: ``quantize`` (QDQ with
ONNX Runtime), ``qnn`` (the QNN plugin EP), ``graph`` (per-node statistics of an ONNX graph),
``cost_model`` (latency from those statistics and a profile) and ``profile`` (device profiles as
data, ``profiles/*.toml``).
"""

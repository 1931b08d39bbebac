"""The edge runtime: serve a channel's model and hot-swap it when the channel changes.

Usable without the store or the ``shadow`` package: it only reads
``channels/<channel>`` (a symlink to an immutable version directory holding
``model.onnx`` and ``manifest.json``)::

    from selection.runtime import ChannelRuntime

    with ChannelRuntime("/var/lib/shadow/channels", "production") as runtime:
        answer = runtime.predict({"rows": [[0.1, 0.2, 0.3]]})
        answer["predictions"], answer["candidate_id"], answer["sha256"]

A device that is not the promoting machine follows a ``shadow fleet serve`` URL
instead (``RemoteChannelRuntime``: download, verify the sha256 and the manifest
signature, hot-swap; a local cache so a restart serves offline)::

    from selection.runtime import RemoteChannelRuntime

    with RemoteChannelRuntime("http://10.0.0.5:8780", "/var/lib/shadow/cache",
                              device_id="robot-17", trusted_keys=["signing.pub"]) as runtime:
        runtime.predict({"rows": [[0.1, 0.2, 0.3]]})
"""

from selection.runtime.channel import DEFAULT_POLL_S, ChannelRuntime, RuntimeEvent
from selection.runtime.errors import BadInputError, ModelLoadError, NoModelError
from selection.runtime.follow import RemoteChannelRuntime
from selection.runtime.inputs import MAX_ROWS, parse_rows
from selection.runtime.model import LoadedModel, load_model_bytes, load_model_file, load_version
from selection.runtime.shadows import ShadowScorer

__all__ = [
    "DEFAULT_POLL_S",
    "MAX_ROWS",
    "BadInputError",
    "ChannelRuntime",
    "LoadedModel",
    "ModelLoadError",
    "NoModelError",
    "RemoteChannelRuntime",
    "RuntimeEvent",
    "ShadowScorer",
    "load_model_bytes",
    "load_model_file",
    "load_version",
    "parse_rows",
]

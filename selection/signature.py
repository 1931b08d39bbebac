"""The model signature: how an edge app feeds a model and reads its answer.

The one record of the contract between a producer (the sweep), the store
(``candidate.lineage["model_io"]``), the channel manifest
(``manifest["model_io"]``) and every reader (the runtime, the gate's
re-scoring). Written only by :meth:`ModelSignature.to_dict` and read only by
:meth:`ModelSignature.from_dict`, so the spelling cannot drift between them.

Standard library only: the slim edge runtime imports it without pandas,
SQLAlchemy or torch.

On-disk spelling (what ``to_dict`` writes, and what every shipped sweep wrote)::

    {"input": "features", "output": "probabilities",
     "features": ["temp", ...], "classes": ["dry", "rain"],
     "target": "rain", "input_shape": null}

A model whose dataset declares that each row's label is known before the next
row is scored may take earlier rows' labels as features; the signature then
lists them, ``"label_features": ["label_lag_1"]``, with ``"label_codes"``: the
class of each code, in the order the classes first appeared in the data (an
order that never changes as the stream grows). The app sends each earlier label
as its position in ``label_codes``, and -1 when it has none or the label is not
listed. Both keys are written only when there are label features, so every
other manifest reads as before (and in runtimes that predate them).

``from_dict`` also reads the long spelling (``input_name``, ``output_name``,
``feature_columns``, ``class_labels``) that runtimes before this module
accepted from hand-written manifests; it is never written.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from selection.errors import ConfigError
from selection.validation import check_known_keys

#: Key of the signature in a candidate's lineage and in a channel manifest.
SIGNATURE_KEY = "model_io"
#: Graph input and output names the sweep exports and every device and runtime reads.
INPUT_NAME = "features"
OUTPUT_NAME = "probabilities"

_KEYS = ("input", "output", "features", "classes", "target", "input_shape", "label_features",
         "label_codes")
#: Read-only synonyms some hand-written manifests used; mapped to the key above.
_LEGACY = {"input_name": "input", "output_name": "output", "feature_columns": "features",
           "class_labels": "classes"}


class SignatureError(ConfigError):
    """A model signature is malformed (missing, mistyped or contradicting fields)."""


@dataclass(frozen=True)
class ModelSignature:
    """Names and shapes an edge app needs to call a model; immutable.

    ``input``/``output`` are the graph's tensor names (None: not recorded, so
    the reader takes :data:`INPUT_NAME`/:data:`OUTPUT_NAME` if the graph has
    it, else the graph's only one), ``features`` the input columns in order
    (None: unnamed columns),
    ``classes`` the label of each output column (None: answer indices),
    ``input_shape`` the per-row shape of an image model (None: flat rows),
    ``label_features`` the features that are earlier rows' labels, coded as
    positions in ``label_codes`` (-1: not known), which the runtime checks in
    every request.
    """

    input: str | None = INPUT_NAME
    output: str | None = OUTPUT_NAME
    features: tuple[str, ...] | None = None
    classes: tuple[str, ...] | None = None
    target: str | None = None
    input_shape: tuple[int, ...] | None = None
    label_features: tuple[str, ...] = ()
    label_codes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Validate here too, so a record built in code is as trustworthy as one read.
        _check_name(self.input, "input")
        _check_name(self.output, "output")
        _check_labels(self.features, "features")
        _check_labels(self.classes, "classes")
        _check_labels(self.label_features, "label_features")
        _check_labels(self.label_codes, "label_codes")
        if self.label_features:
            missing = [f for f in self.label_features if f not in (self.features or ())]
            if missing or not self.label_codes:
                raise SignatureError(
                    "a model signature's 'label_features' must be among its 'features' and "
                    f"come with 'label_codes'; {missing or 'no label_codes'} do not")
            unknown = [c for c in self.label_codes if c not in (self.classes or ())]
            if unknown or not self.classes:
                raise SignatureError(
                    "a model signature's 'label_codes' must be among its 'classes'; "
                    f"{unknown or 'no classes'} are not")
        if self.target is not None and not isinstance(self.target, str):
            raise SignatureError(f"a model signature's 'target' must be a string or null; "
                                 f"got {self.target!r}")
        if self.input_shape is not None:
            if not self.input_shape or not all(
                    isinstance(d, int) and not isinstance(d, bool) and d > 0
                    for d in self.input_shape):
                raise SignatureError(
                    "a model signature's 'input_shape' must be a list of positive integers "
                    f"(the shape of one row, e.g. [1, 8, 8]) or null; got {list(self.input_shape)}")
            if self.features and math.prod(self.input_shape) != len(self.features):
                raise SignatureError(
                    f"a model signature's 'input_shape' {list(self.input_shape)} must hold as "
                    f"many values as it lists features ({len(self.features)}); fix one of them")

    @property
    def n_features(self) -> int | None:
        """Values per row, when the signature knows them."""
        if self.features:
            return len(self.features)
        return math.prod(self.input_shape) if self.input_shape else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able form stored in lineage and manifests (every key, null when unknown)."""
        return {
            "input": self.input,
            "output": self.output,
            "features": list(self.features) if self.features is not None else None,
            "classes": list(self.classes) if self.classes is not None else None,
            "target": self.target,
            "input_shape": list(self.input_shape) if self.input_shape is not None else None,
            **({"label_features": list(self.label_features),
                "label_codes": list(self.label_codes)} if self.label_features else {}),
        }

    def label_columns(self) -> tuple[int, ...]:
        """The input columns that hold earlier labels (positions in ``features``)."""
        features = self.features or ()
        return tuple(features.index(name) for name in self.label_features)

    @classmethod
    def from_dict(cls, data: Any, *, where: str = "the model signature") -> ModelSignature:
        """Parse and validate a stored signature; SignatureError says what is wrong and where.

        ``where`` names the source in messages (e.g. the manifest's path).
        """
        if not isinstance(data, Mapping):
            raise SignatureError(f"{where} must be a JSON object (keys: {', '.join(_KEYS)}); "
                                 f"got {type(data).__name__}")
        check_known_keys([_LEGACY.get(str(k), str(k)) for k in data], _KEYS, where, SignatureError)
        values: dict[str, Any] = {}
        for key, value in data.items():
            canonical = _LEGACY.get(str(key), str(key))
            if canonical in values:
                raise SignatureError(f"{where} gives {canonical!r} twice (as {canonical!r} and "
                                     f"{key!r}); keep one")
            values[canonical] = value
        try:
            return cls(
                input=values.get("input"),
                output=values.get("output"),
                features=_tuple(values.get("features"), "features", where),
                classes=_labels_as_text(_tuple(values.get("classes"), "classes", where)),
                target=values.get("target"),
                input_shape=_tuple(values.get("input_shape"), "input_shape", where),
                label_features=_tuple(values.get("label_features"), "label_features",
                                      where) or (),
                label_codes=_labels_as_text(_tuple(values.get("label_codes"), "label_codes",
                                                   where)) or (),
            )
        except SignatureError as exc:
            message = str(exc)
            if message.startswith("a model signature"):
                message = where + message[len("a model signature"):]
            raise SignatureError(message) from None

    @classmethod
    def from_lineage(cls, lineage: Mapping[str, Any] | None) -> ModelSignature | None:
        """The signature a candidate's lineage records, None if it records none."""
        if not isinstance(lineage, Mapping) or lineage.get(SIGNATURE_KEY) is None:
            return None
        return cls.from_dict(lineage[SIGNATURE_KEY], where=f"lineage[{SIGNATURE_KEY!r}]")


def _check_name(value: Any, key: str) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise SignatureError(f"a model signature's {key!r} must be the graph's {key} name "
                             f"(a non-empty string) or null; got {value!r}")


def _check_labels(values: tuple[str, ...] | None, key: str) -> None:
    if values is None:
        return
    if not all(isinstance(v, str) for v in values):
        raise SignatureError(f"a model signature's {key!r} must be a list of strings; "
                             f"got {list(values)}")
    if len(set(values)) != len(values):
        twice = sorted({v for v in values if values.count(v) > 1})
        raise SignatureError(f"a model signature's {key!r} must not repeat a name; "
                             f"{twice} appear more than once")


def _tuple(value: Any, key: str, where: str) -> tuple[Any, ...] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)):
        raise SignatureError(f"{where}'s {key!r} must be a list or null; got {value!r}")
    return tuple(value)


def _labels_as_text(values: tuple[Any, ...] | None) -> tuple[str, ...] | None:
    """Class labels as text: integer labels (some hand-written manifests) become '0', '1'."""
    if values is None:
        return None
    return tuple(str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in values)

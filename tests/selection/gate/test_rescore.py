"""Re-scoring reads the candidate's signature through ModelSignature and refuses file readers."""

from __future__ import annotations

import numpy as np
import pytest

from selection.errors import IntegrityError
from selection.gate.rescore import predict_classes
from selection.signature import ModelSignature
from selection.testing import CLASSES, FEATURES, tiny_classifier
from tests.selection.hostile import file_reading_classifier

X = np.random.default_rng(0).normal(size=(5, len(FEATURES))).astype(np.float32)


def test_the_stored_dict_and_the_record_score_alike() -> None:
    model = tiny_classifier(2)
    signature = ModelSignature(features=FEATURES, classes=CLASSES)
    by_record = predict_classes(model, X, signature)
    assert by_record.shape == (5,) and by_record.dtype == np.int64
    assert (predict_classes(model, X, signature.to_dict()) == by_record).all()
    assert (predict_classes(model, X, {}) == by_record).all()  # none recorded: graph names


def test_a_signature_naming_another_tensor_or_malformed_is_refused() -> None:
    with pytest.raises(IntegrityError, match=r"the input 'x' named by the candidate's signature "
                                             r"must exist in the model; its inputs are \['features'\]"):
        predict_classes(tiny_classifier(2), X, {"input": "x"})
    with pytest.raises(IntegrityError, match="the candidate's model_io: unknown key 'inputs'"):
        predict_classes(tiny_classifier(2), X, {"inputs": "features"})


def test_a_model_that_reads_files_is_never_scored() -> None:
    with pytest.raises(IntegrityError, match="must be a self-contained ONNX model"):
        predict_classes(file_reading_classifier("README.md"), X, None)

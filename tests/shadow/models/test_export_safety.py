"""Export refuses a model whose tensors live in other files, and real exports are one file."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn

from selection.artifacts.external_data import external_tensors
from shadow.errors import ExportError
from shadow.models.export import check_exportable, export_onnx, verify_onnx
from tests.selection.hostile import file_reading_classifier


def test_a_real_export_is_self_contained() -> None:
    module = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))
    data = export_onnx(module, np.zeros((4, 8), np.float32))
    assert external_tensors(data) == []


def test_external_data_is_refused_at_export_and_before_verification() -> None:
    hostile = file_reading_classifier("README.md")
    with pytest.raises(ExportError, match="the exported model must be a self-contained ONNX model"):
        check_exportable(hostile)
    with pytest.raises(ExportError, match="'leak' points at 'README.md'"):
        verify_onnx(hostile, nn.Linear(8, 16), np.zeros((2, 8), np.float32))

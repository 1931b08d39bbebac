"""Every kind of named strategy in shadow (and ranking policies in selection) is one Registry."""

from __future__ import annotations

import pytest

from selection.errors import ConfigError
from selection.ranking.policies import POLICIES
from selection.registry import Registry
from shadow.data.slicing.base import STRATEGIES, SliceStrategy
from shadow.devices import DEVICES, Device
from shadow.models import FAMILIES, ModelFamily


@pytest.mark.parametrize(("registry", "some"), [
    (POLICIES, "default"), (STRATEGIES, "recent"), (DEVICES, "host-cpu"), (FAMILIES, "mlp"),
], ids=["policies", "strategies", "devices", "families"])
def test_each_kind_is_a_registry_with_the_one_error_wording(registry, some):
    assert isinstance(registry, Registry) and some in registry
    with pytest.raises(ConfigError, match=rf"^\[t\]: unknown {registry.kind} 'nope'; known: .*{some}"):
        registry.get("nope", "[t]")


@pytest.mark.parametrize(("base", "args"), [(SliceStrategy, ({}, "t")), (ModelFamily, ()), (Device, ())])
def test_contracts_are_abstract(base, args):
    """The bases are contracts: a subclass that skips the abstract method cannot be built."""
    with pytest.raises(TypeError, match="abstract"):
        base(*args)

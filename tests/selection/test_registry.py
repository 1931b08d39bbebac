"""selection.registry: one lookup, one error wording, no silent replacement; every kind uses it."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from selection.errors import ConfigError
from selection.registry import Registry


@dataclass(frozen=True)
class Thing:
    name: str


def test_register_get_and_read_like_a_mapping():
    things: Registry[Thing] = Registry("thing", fix="Use one of those.")
    first = things.register(Thing("b"))
    things.register(Thing("a"))
    assert first == Thing("b") and things.get("b") is first and things["a"] == Thing("a")
    assert things.names() == ["b", "a"] and list(things) == ["b", "a"]  # registration order
    assert "a" in things and "c" not in things and len(things) == 2
    assert dict(things.items()) == {"b": Thing("b"), "a": Thing("a")}


def test_unknown_name_lists_known_ones_and_the_fix():
    things: Registry[Thing] = Registry("thing", fix="Use one of those.")
    things.register(Thing("a"))
    with pytest.raises(ConfigError, match=r"^\[x\]: unknown thing 'z'; known: a\. Use one of those\.$"):
        things.get("z", "[x]")
    with pytest.raises(ConfigError, match=r"^unknown thing 3; known: a\."):
        things.get(3)
    with pytest.raises(KeyError):
        things["z"]  # plain indexing keeps mapping semantics


def test_decorator_forms_and_duplicates_refused():
    kinds: Registry[type] = Registry("kind")

    @kinds.register
    class Alpha:
        name = "alpha"

    @kinds.register(name="beta")
    class Other:
        pass

    assert kinds["alpha"] is Alpha and kinds["beta"] is Other
    with pytest.raises(ConfigError, match="a kind named 'alpha' is already registered"):
        kinds.register(Alpha)
    with pytest.raises(TypeError, match="no string 'name'"):
        kinds.register(object())


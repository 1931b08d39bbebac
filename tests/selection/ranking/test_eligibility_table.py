"""One table of eligibility rules: SQL, pandas, the gate and the refit agree on the same rows.

Rows are written to a real table on each backend (SQLite, PostgreSQL), with
NULLs and values on, just inside and just outside every bound; each rule is
evaluated by the SQL evaluator in the database and by the pandas one on the
rows read back, and both must break the same rows. Then the same through the
store: leaderboard (SQL), its reasons (pandas), ``evaluate_gate``'s
constraints check and the refit's device checks.
"""

from __future__ import annotations

import ast
import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import BigInteger, Boolean, Column, Float, MetaData, String, Table, select

from selection import DeviceResult, Store
from selection.gate.decision import evaluate_gate
from selection.leaderboard.frame import leaderboard
from selection.ranking.eligibility import (
    DEVICE_RULES,
    RULES,
    eligible_sql,
    explain,
    row_violations,
    violations,
)
from selection.ranking.policies import RankingPolicy, policy_from_config
from shadow.errors import RefitError
from shadow.sweep.refit import _check as refit_check

#: Per column: NULL, the bound, just past it, well inside (bounds: latency 2, size 150, accuracy 0.5).
VALUES: dict[str, list] = {
    "status": ["ok", "failed", None],
    "error": [None, "boom"],
    "accuracy": [None, 0.5, 0.4999, 0.9],
    "latency_ms": [None, 2.0, 2.0001, 1.0],
    "size_bytes": [None, 150, 151, 100],
    "host_latency_p50_ms": [None, 1.0],
    "train_seconds": [None, 3.0],
    "has_fallback": [None, True, False],
    "device_eligible": [None, True, False],
    "device_ineligible_reason": [None, "op Mod unsupported"],
    "peak_activation_bytes": [None, 15, 16, 3],
    "memory_budget_bytes": [None, 15],
}
NOMINAL = {"status": "ok", "error": None, "accuracy": 0.9, "latency_ms": 1.0, "size_bytes": 100,
           "host_latency_p50_ms": 1.0, "train_seconds": 3.0, "has_fallback": False,
           "device_eligible": True, "device_ineligible_reason": None, "peak_activation_bytes": 3,
           "memory_budget_bytes": 15}
TIGHT = {"max_latency_ms": 2.0, "max_size_bytes": 150, "min_accuracy": 0.5}
POLICY_CASES = {
    "default": RankingPolicy(),
    "loose": RankingPolicy(name="loose", within_memory_budget=False, allow_cpu_fallback=True,
                           respect_device_eligibility=False),
    "tight": policy_from_config(TIGHT, "[ranking]"),
    "tight-latency": policy_from_config({**TIGHT, "policy": "latency"}, "[ranking]"),
    "train-seconds": RankingPolicy(name="t", objective="train_seconds", tie_breakers=()),
    "p50": RankingPolicy(name="p", objective="host_latency_p50_ms", min_accuracy=0.5),
}
_TYPES = {"status": String(16), "error": String(64), "device_ineligible_reason": String(64),
          "size_bytes": BigInteger(), "peak_activation_bytes": BigInteger(),
          "memory_budget_bytes": BigInteger(), "has_fallback": Boolean(), "device_eligible": Boolean()}


def _rows() -> list[dict]:
    """Every value of every column once on an otherwise eligible row, then random mixes."""
    rows = [dict(NOMINAL, row_id=0)]
    for column, values in VALUES.items():
        for value in values:
            rows.append({**NOMINAL, column: value, "row_id": len(rows)})
    rng = np.random.default_rng(11)
    for _ in range(300):
        rows.append({c: v[int(rng.integers(len(v)))] for c, v in VALUES.items()} | {"row_id": len(rows)})
    # Both memory columns NULL together, and a peak over a NULL budget: NULL never breaks the rule.
    rows.append({**NOMINAL, "peak_activation_bytes": None, "memory_budget_bytes": None, "row_id": len(rows)})
    rows.append({**NOMINAL, "peak_activation_bytes": 10**12, "memory_budget_bytes": None, "row_id": len(rows)})
    return rows


@pytest.fixture
def table(any_store: Store):
    """The rows in a real table of the store's database (each backend in turn)."""
    meta = MetaData()
    t = Table("eligibility_probe", meta, Column("row_id", BigInteger, primary_key=True),
              *(Column(c, _TYPES.get(c, Float())) for c in VALUES))
    rows = _rows()
    with any_store.transaction() as conn:
        meta.create_all(conn)
        conn.execute(t.insert(), rows)
    yield t, rows
    with any_store.transaction() as conn:
        meta.drop_all(conn)


def _sql_broken(store: Store, t: Table, policy: RankingPolicy, rules) -> set[int]:
    """Ids of the rows the database finds ineligible under ``rules``."""
    with store.snapshot() as conn:
        every = set(conn.execute(select(t.c.row_id)).scalars())
        kept = set(conn.execute(select(t.c.row_id).where(eligible_sql(policy, t.c, rules))).scalars())
    return every - kept


@pytest.mark.parametrize("case", sorted(POLICY_CASES))
def test_sql_and_pandas_break_the_same_rows_rule_by_rule(any_store: Store, table, case: str) -> None:
    t, rows = table
    policy = POLICY_CASES[case]
    with any_store.snapshot() as conn:
        stored = pd.DataFrame(conn.execute(select(t).order_by(t.c.row_id)).mappings().all())
    given = pd.DataFrame(rows)
    ids = list(stored["row_id"])
    assert ids == list(given["row_id"])
    applied = [r for r in RULES if r.applies(policy)]
    assert applied, "every policy checks at least the status and the objective"
    for rule in applied:
        in_sql = _sql_broken(any_store, t, policy, [rule])
        for frame in (stored, given):  # as the database returns them, and as written
            in_pandas = {ids[i] for i, found in enumerate(explain(frame, policy, [rule])) if found}
            assert in_sql == in_pandas, (case, rule.name, sorted(in_sql ^ in_pandas))
    everything = _sql_broken(any_store, t, policy, RULES)
    reasons = violations(stored, policy)
    assert everything == {ids[i] for i, why in enumerate(reasons) if why is not None}
    assert 0 < len(everything) < len(ids)  # the probe rows test both outcomes


def test_boundaries_nulls_and_messages() -> None:
    policy = POLICY_CASES["tight"]

    def why(**changes) -> list[str]:
        return [v.message for v in row_violations({**NOMINAL, **changes}, policy)]

    assert why() == []
    assert why(latency_ms=2.0, size_bytes=150, accuracy=0.5) == []  # on the bound is within it
    assert why(latency_ms=2.0001) == ["latency_ms 2.0001 > max 2"]
    assert why(size_bytes=151) == ["size_bytes 151 > max 150"]
    assert why(accuracy=0.4999) == ["accuracy 0.4999 < min 0.5"]
    assert why(latency_ms=None) == ["no latency_ms to check against the max 2"]
    assert why(accuracy=None) == ["no accuracy", "no accuracy to check against the min 0.5"]
    assert why(status="failed", error="boom") == ["status failed (boom)"]
    assert why(status=None) == ["status None"]
    assert why(has_fallback=None, device_eligible=None, peak_activation_bytes=None) == []
    assert why(has_fallback=True) == ["some ops fall back to the CPU (policy allows no CPU fallback)"]
    assert why(device_eligible=False) == ["device marks it ineligible: no reason given"]
    assert why(device_eligible=False, device_ineligible_reason="op Mod") == [
        "device marks it ineligible: op Mod"]
    assert why(peak_activation_bytes=15) == []
    assert why(peak_activation_bytes=16) == ["peak activations 16 B exceed the memory budget 15 B"]
    # Broken rules are listed in table order.
    assert [v.rule for v in row_violations({**NOMINAL, "has_fallback": True, "status": "failed",
                                            "latency_ms": 9.0}, policy)] == [
        "status", "cpu fallback", "max latency"]


def test_every_rule_names_its_config_key() -> None:
    fields = set(RankingPolicy.__dataclass_fields__)
    for rule in RULES:
        assert rule.key is None or rule.key in fields, rule
        assert (rule.switch == "always") == (rule.name in ("status", "objective")), rule
    assert {r.name for r in DEVICE_RULES} == {"device eligibility", "cpu fallback", "memory budget"}


# -- the same rules through the store: leaderboard SQL, its reasons, the gate, the refit ---------

def _extras(rng: np.random.Generator) -> dict:
    extra: dict = {}
    for key, values in (("has_fallback", [None, True, False]), ("eligible", [None, True, False]),
                        ("peak_activation_bytes", [None, 15, 16]), ("memory_budget_bytes", [None, 15]),
                        ("ineligible_reason", [None, "op Mod unsupported"])):
        value = values[int(rng.integers(len(values)))]
        if value is not None:
            extra[key] = value
    return extra


@pytest.fixture
def stored(any_make) -> list[str]:
    """Candidates on device "npu" with every mix of device extras, bounds and NULL metrics."""
    any_make.sweep()
    rng = np.random.default_rng(5)
    ids = []
    for i, (accuracy, latency) in enumerate(itertools.islice(itertools.cycle(
            itertools.product([None, 0.5, 0.4999, 0.9], [None, 2.0, 2.0001, 1.0])), 48)):
        cid = f"c-{i:02d}"
        sha = any_make.candidate(cid, store=False).onnx_sha256
        any_make.candidate(cid, devices=(DeviceResult(
            "npu", "ok" if rng.random() < 0.85 else "failed", error=None, accuracy=accuracy,
            latency_ms=latency, size_bytes=int(rng.choice([100, 150, 151])), artifact_sha256=sha,
            extra=_extras(rng)),))
        ids.append(cid)
    return ids


@pytest.mark.parametrize("case", ["default", "loose", "tight"])
def test_leaderboard_gate_and_pandas_agree(any_store: Store, stored: list[str], case: str) -> None:
    policy = POLICY_CASES[case]
    frame = leaderboard(any_store, device="npu", policy=policy)
    assert sorted(frame["candidate_id"]) == stored
    reasons = violations(frame, policy)
    assert [r is None for r in reasons] == list(frame["eligible"])  # SQL == pandas
    assert 0 < int(frame["eligible"].sum()) < len(frame)
    for cid, eligible, reason in zip(frame["candidate_id"], frame["eligible"], frame["ineligible_reason"], strict=True):
        check = evaluate_gate(any_store, cid, device="npu", ranking=policy).check("constraints")
        assert check is not None and check.passed == eligible, (cid, check)
        if not eligible:
            assert check.detail == f"breaks the ranking policy {policy.name!r}: {reason}"


def test_refit_refuses_exactly_the_device_rules_the_leaderboard_applies(
        any_store: Store, stored: list[str]) -> None:
    # A policy whose only rules beyond status/objective are the device ones.
    device_only = RankingPolicy(name="device-only")
    frame = leaderboard(any_store, device="npu", policy=device_only).set_index("candidate_id")
    refused = 0
    for cid in stored:
        refit = any_store.get_candidate(cid)
        result = refit.device("npu")
        if result.status != "ok" or result.accuracy is None:
            continue  # the refit's other checks decide those
        # The parent: the same model with no device extras (host-like: fits every device rule).
        parent = replace(refit, devices=(replace(result, extra={}),))
        if bool(frame.loc[cid, "eligible"]):
            refit_check(parent, refit, max_drop=0.05)
        else:
            refused += 1
            with pytest.raises(RefitError, match="does not fit device 'npu' though its parent does: "):
                refit_check(parent, refit, max_drop=0.05)
            # ... unless the parent breaks the same rules: a refit may keep what its parent had.
            refit_check(refit, refit, max_drop=0.05)
    assert refused > 0


def test_import_direction_is_one_way() -> None:
    """policies -> eligibility, and decision -> checks -> policy/record: no cycle, not even typing-only."""
    root = Path(__file__).resolve().parents[3] / "selection"

    def imports(relative: str) -> set[str]:
        tree = ast.parse((root / relative).read_text())
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
        return found

    assert not {m for m in imports("ranking/eligibility.py") if m.startswith("selection.ranking")}
    assert "selection.gate.decision" not in imports("gate/checks.py")
    for module in ("gate/policy.py", "gate/record.py"):
        assert not {"selection.gate.decision", "selection.gate.checks"} & imports(module), module

"""Ranking: which candidates are eligible, in what order, and which are Pareto-optimal.

Owns the ranking policies (by name, from a config table), the eligibility rules
(hard constraints such as a latency budget) and the Pareto front.
May import: ``selection.errors``, ``selection.records``, ``selection.registry``. Never the store.
"""

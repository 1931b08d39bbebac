"""Before any candidate runs: can every Ray node import the sweep's own model family?

A family named by import path (``[model] family = "my_pkg.models:MyFamily"``)
is resolved again in each worker (:mod:`shadow.models.external`). The driver
importing it proves nothing about the nodes: a package installed on the
laptop only, or a module the job's ``--working-dir`` did not ship, would fail
every candidate one by one. So one small task per alive node resolves the path
first (pinned to that node); the first node that cannot is a ConfigError
naming it and the fix, raised before the store changes. Built-in families skip
this: they ship with shadow-sweep itself.
"""

from __future__ import annotations

from shadow.errors import ConfigError
from shadow.models.external import is_family_path

#: How long one node may take to start a worker and import the family (torch included).
PROBE_TIMEOUT_S = 300.0


def try_import_family(path: str) -> str | None:
    """Resolve ``path`` in this process: None when it works, else the one-line reason (runs in a worker)."""
    from shadow.models.external import FamilyImportError, resolve_family

    try:
        resolve_family(path)
    except FamilyImportError as exc:
        return exc.reason
    except ConfigError as exc:  # imports, but breaks the contract there (another version of it?)
        return str(exc)
    return None


def check_workers_import(family: str) -> None:
    """ConfigError unless every alive node of the connected cluster can resolve ``family``."""
    if not is_family_path(family):
        return
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0, max_retries=1)(try_import_family)
    nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
    refs = {
        node: probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(family)
        for node in nodes
    }
    try:
        answers = dict(zip(refs, ray.get(list(refs.values()), timeout=PROBE_TIMEOUT_S)))
    except ray.exceptions.GetTimeoutError:
        raise ConfigError(
            f"[model] family {family!r}: the Ray nodes did not import it within {PROBE_TIMEOUT_S:.0f} s; "
            "check that the cluster has free workers (`ray status`) and retry."
        ) from None
    for node, reason in answers.items():
        if reason is not None:
            raise ConfigError(
                f"[model] family {family!r}: Ray node {node[:12]} cannot use it ({reason}); install its "
                "package on every node, or ship it with the job (`ray job submit --working-dir .`, or "
                "runtime_env {\"py_modules\": [...]}): see docs/user-guide.md, \"Your own model family\"."
            )

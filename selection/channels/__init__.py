"""Channels: what production runs, changed atomically, with an append-only history.

``promotion`` moves a channel (promote, rollback, history) in one transaction; ``files``
lays out ``channels/<channel>`` (an immutable version folder behind a symlink swapped with
``os.replace``); ``doctor`` checks that store, artifacts and files agree and repairs the files.
May import: ``selection.store``, ``selection.artifacts``, ``selection.records``. Never the gate.
"""

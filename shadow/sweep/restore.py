"""A stored sweep planned again, on the very rows it trained on: what refits and ensembles need.

A sweep's candidates were trained on one version of its dataset; a refit retrains on those
rows plus the holdout, and an ensemble is calibrated on its members' rows. Both plan the
sweep again from its stored config, here, and refuse (RefitError, one line) when the data
cannot be loaded from this process or no longer has the sweep's fingerprint.
"""

from __future__ import annotations

import json
from pathlib import Path

from selection.errors import NotFoundError
from selection.records import CandidateRecord
from selection.store import Store
from shadow.data.versions import VersionNotFoundError
from shadow.errors import RefitError
from shadow.sweep.config import config_from_dict
from shadow.sweep.prepare import PreparedSweep, prepare_sweep


def prepare_stored_sweep(store: Store, parent: CandidateRecord, config_path: Path | None) -> PreparedSweep:
    """``parent``'s sweep planned again from its stored config; its data must be unchanged.

    ``config_path`` resolves a dataset the config named by a relative path; without it the
    manifest is read where the sweep found it (the candidate's lineage). RefitError when
    the data cannot be loaded or changed since the sweep.
    """
    sweep = store.get_sweep(parent.sweep_id)
    raw = json.loads(json.dumps(sweep.config))
    manifest = parent.lineage.get("dataset_manifest")
    if config_path is None and isinstance(manifest, str) and Path(manifest).is_file():
        raw["sweep"]["dataset"] = manifest  # where it was found at sweep time, as an absolute path
    try:
        # The version the sweep trained on, even if batches were appended since.
        prepared = prepare_sweep(config_from_dict(raw, config_path), sweep_id=sweep.sweep_id,
                                 home=store.home, data_version=sweep.dataset_fingerprint)
    except NotFoundError as exc:
        raise RefitError(
            f"the dataset of sweep {sweep.sweep_id!r} cannot be loaded from here ({exc}); a "
            "refit retrains on the sweep's own rows, so run it where the sweep's dataset is"
        ) from None
    except VersionNotFoundError:
        raise RefitError(
            f"the dataset of sweep {sweep.sweep_id!r} changed since the sweep (no version of it "
            f"has fingerprint {sweep.dataset_fingerprint[:12]} now); a refit must train on the "
            "rows the gate judged; run a new sweep on the new data"
        ) from None
    if prepared.dataset.fingerprint != sweep.dataset_fingerprint:
        raise RefitError(
            f"the dataset of sweep {sweep.sweep_id!r} changed since the sweep (fingerprint "
            f"{prepared.dataset.fingerprint[:12]} now, {sweep.dataset_fingerprint[:12]} then); "
            "a refit must train on the rows the gate judged; run a new sweep on the new data"
        )
    return prepared


__all__ = ["prepare_stored_sweep"]

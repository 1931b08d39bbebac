"""``shadow datasets`` and ``shadow devices``: what can be swept, and where to."""

from __future__ import annotations

import argparse
from typing import Any

from shadow.cli.common import add_format_option
from shadow.cli.output import render_frame

# The catalog (pandas) and the device registry (torch, ONNX Runtime) load
# when a verb runs, not when its parser is built.


def add_parsers(verbs: Any) -> None:
    datasets = verbs.add_parser(
        "datasets", help="list the dataset catalog",
        description="List datasets in the catalog ($SHADOW_CATALOG, ./datasets, the project's "
        "datasets/). Each is a folder with a dataset.toml manifest.",
    )
    add_format_option(datasets)
    datasets.set_defaults(handler=run_datasets)
    devices = verbs.add_parser(
        "devices", help="list the devices candidates are evaluated on",
        description="List devices (built-in profiles and those in $SHADOW_DEVICES folders); "
        "name them in a sweep config's [sweep] devices.",
    )
    add_format_option(devices)
    devices.set_defaults(handler=run_devices)


def run_datasets(args: argparse.Namespace) -> int:
    import pandas as pd

    from shadow.data.catalog import catalog_dirs, list_manifests

    rows = [
        {
            "name": m.name,
            "title": m.title,
            "rows": m.declared_rows,
            "target": m.target,
            "features": len(m.features) + m.label_lags,  # with the earlier labels it carries
            "drift_from_row": m.drift_from_row,
            "license": m.license,
            "manifest": str(m.path),
        }
        for m in list_manifests()
    ]
    columns = ["name", "rows", "target", "features", "drift_from_row", "title"]
    frame = pd.DataFrame(rows, columns=list(rows[0]) if rows else columns)
    # Row counts are whole numbers even where some manifests leave them unset (NaN made them floats).
    frame = frame.astype({"rows": "Int64", "drift_from_row": "Int64"})
    if not rows and args.format == "table":
        searched = ", ".join(str(p) for p in catalog_dirs()) or "no catalog folder exists"
        print(f"(no datasets; searched: {searched})")
        return 0
    render_frame(frame, args.format, table_columns=columns)
    return 0


def run_devices(args: argparse.Namespace) -> int:
    import pandas as pd

    from shadow.devices import all_devices

    rows = []
    for device in sorted(all_devices().values(), key=lambda d: (d.kind != "host", d.name)):
        profile = getattr(device, "profile", None)  # profile-defined devices carry their data
        emulated = device.emulated()[0] if hasattr(device, "emulated") else False
        rows.append({
            "name": device.name,
            "kind": device.kind,
            "numerics": device.numerics,
            "soc": profile.soc if profile else None,
            "emulator": "qnn-htp" if emulated else ("none" if device.kind == "host" else "cpu-reference"),
            "latency": "measured on this host" if profile is None else "cost model (estimate)",
            "source": profile.source_summary() if profile else "measured",
            "profile": str(profile.path) if profile else None,
            "description": device.description,
        })
    frame = pd.DataFrame(rows)
    render_frame(frame, args.format, max_width=60,
                 table_columns=["name", "kind", "numerics", "soc", "emulator", "latency", "description"])
    return 0

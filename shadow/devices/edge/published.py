"""Published on-device latencies (Qualcomm AI Hub) that the cost model is calibrated and judged on.

The data is ``published/ai_hub_latency.csv``: one row per model, precision, device and
runtime, with the package version and file it was read from (its header says how it was
extracted). SM8550 is the chip held out of every fit: its rows (AI Hub's ``QCS8550 (Proxy)``,
the same silicon) only judge how the model transfers, and :func:`fit_rows` refuses them.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from shadow.errors import ConfigError

DATA = Path(__file__).with_name("published") / "ai_hub_latency.csv"
#: Chips whose published figures must never set a profile's terms (SM8550 and its IoT twin).
HELD_OUT_CHIPS = frozenset({"SM8550", "QCS8550"})
#: AI Hub device chips that are another chip's silicon under an IoT part number.
SAME_SILICON = {"QCS8550": "SM8550"}


@dataclass(frozen=True)
class PublishedLatency:
    """One published measurement: ``inference_ms`` of ``model`` in ``numerics`` on ``chip``."""

    model: str
    numerics: str
    chip: str
    device: str
    runtime: str
    inference_ms: float
    npu_layers: int | None
    total_layers: int | None
    source: str

    @property
    def silicon(self) -> str:
        """The phone SoC this chip is (QCS8550 -> SM8550), which is what a profile's ``soc`` names."""
        return SAME_SILICON.get(self.chip, self.chip)


def _int(text: str) -> int | None:
    return int(text) if text.strip() else None


def load_published(path: Path = DATA) -> list[PublishedLatency]:
    """Every row of the published-latency file (``#`` lines are its provenance header)."""
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if not line.startswith("#")]
    except OSError as exc:
        raise ConfigError(f"published latencies {path}: cannot be read ({exc.strerror}); check the path.") from None
    rows = []
    for raw in csv.DictReader(lines):
        try:
            rows.append(PublishedLatency(
                model=raw["model"], numerics=raw["numerics"], chip=raw["chip"], device=raw["device"],
                runtime=raw["runtime"], inference_ms=float(raw["inference_ms"]),
                npu_layers=_int(raw["npu_layers"]), total_layers=_int(raw["total_layers"]),
                source=f"{raw['source']} (job {raw['job_id']})",
            ))
        except (KeyError, ValueError) as exc:
            raise ConfigError(f"published latencies {path}: bad row {raw!r} ({exc}); fix the file.") from None
    return rows


def select(rows: Iterable[PublishedLatency], silicon: str, runtime: str = "qnn_dlc",
           numerics: Iterable[str] | None = None) -> list[PublishedLatency]:
    """The rows measured on ``silicon`` (a profile's ``soc``) with ``runtime``, optionally some numerics only."""
    wanted = set(numerics) if numerics is not None else None
    return [r for r in rows if r.silicon == silicon and r.runtime == runtime
            and (wanted is None or r.numerics in wanted)]


def fit_rows(rows: Iterable[PublishedLatency]) -> list[PublishedLatency]:
    """``rows`` checked to hold no held-out chip: what a calibration may use."""
    rows = list(rows)
    banned = sorted({r.chip for r in rows if r.chip in HELD_OUT_CHIPS or r.silicon in HELD_OUT_CHIPS})
    if banned:
        raise ConfigError(f"published latencies of {', '.join(banned)} are held out of every fit "
                          "(they judge transfer to an unseen chip); calibrate on another chip.")
    return rows

"""Device profiles: what an edge target computes, how fast, and where each figure comes from.

A profile is a TOML file (``shadow/devices/profiles/*.toml`` ships the
built-in ones; folders named in ``$SHADOW_DEVICES``, separated by
``os.pathsep``, add the user's own). Every numeric figure must have an entry
in ``[sources]`` saying where it comes from (a public document, or
"assumed: ..." / "fitted: ..." stating how it was derived): a profile without
provenance is refused, because a latency estimate is only as good as the
numbers behind it.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selection.validation import check_known_keys
from shadow.errors import ConfigError

#: The folder of built-in profiles.
BUILTIN_DIR = Path(__file__).with_name("profiles")
#: Environment variable listing folders of user profiles (os.pathsep-separated).
ENV_VAR = "SHADOW_DEVICES"

#: Numerics a profile can run, and the bytes one activation element takes in each.
ACTIVATION_BYTES = {"a8w8": 1, "a16w8": 2, "fp16": 2, "fp32": 4}
#: Bytes per weight element in each numerics.
WEIGHT_BYTES = {"a8w8": 1, "a16w8": 1, "fp16": 2, "fp32": 4}
#: Which compute-rate key each numerics uses.
RATE_KEY = {"a8w8": "int8_macs_per_s", "a16w8": "int16_macs_per_s",
            "fp16": "fp16_macs_per_s", "fp32": "fp32_macs_per_s"}
KINDS = ("npu", "cpu", "host")
#: Op classes the cost model distinguishes (see shadow.devices.edge.graph).
OP_CLASSES = ("gemm", "conv", "dwconv", "attention", "pool", "elementwise", "layout")

#: Every table and key a profile may hold; a key not listed is an error (typos
#: would otherwise silently fall back to a default).
SCHEMA: dict[str, dict[str, type | tuple[type, ...]]] = {
    "": {"name": str, "kind": str, "description": str, "soc": str, "numerics": str},
    "qnn": {"backend": str, "soc_model": int, "htp_arch": int},
    "compute": {k: (int, float) for k in RATE_KEY.values()},
    "memory": {"dram_bytes_per_s": (int, float), "onchip_bytes": int,
               "onchip_bytes_per_s": (int, float), "budget_bytes": int},
    "dispatch": {"per_op_s": (int, float), "per_inference_s": (int, float)},
    "fallback": {"cpu_macs_per_s": (int, float), "cpu_bytes_per_s": (int, float),
                 "cpu_per_op_s": (int, float), "transfer_bytes_per_s": (int, float),
                 "transfer_latency_s": (int, float)},
    "efficiency": {k: (int, float) for k in OP_CLASSES},
    "ops": {"supported": list},
}
#: Tables whose keys are free-form: provenance, and published latencies to compare against.
FREE_TABLES = ("sources", "published_latency", "published_latency_sources")
REQUIRED = {
    "": ("name", "kind", "description", "numerics"),
    "memory": ("dram_bytes_per_s", "budget_bytes"),
    "dispatch": ("per_op_s", "per_inference_s"),
}


@dataclass(frozen=True)
class DeviceProfile:
    """One device as data. Rates are per second, sizes in bytes, times in seconds."""

    name: str
    kind: str
    description: str
    numerics: str
    soc: str | None
    path: Path
    compute: Mapping[str, float]
    dram_bytes_per_s: float
    onchip_bytes: int
    onchip_bytes_per_s: float
    budget_bytes: int
    per_op_s: float
    per_inference_s: float
    fallback: Mapping[str, float]
    efficiency: Mapping[str, float]
    supported_ops: frozenset[str] | None
    qnn: Mapping[str, Any] | None
    sources: Mapping[str, str] = field(default_factory=dict)
    #: Published device latencies (ms) keyed "<model>.<numerics>", to compare estimates with.
    published_latency: Mapping[str, float] = field(default_factory=dict)

    def macs_per_s(self, numerics: str | None = None) -> float:
        """Effective MAC/s in ``numerics`` (default: the profile's own); 0 when it has no such datapath."""
        return float(self.compute.get(RATE_KEY[numerics or self.numerics], 0.0))

    def efficiency_of(self, op_class: str) -> float:
        return float(self.efficiency.get(op_class, 1.0))

    def supports(self, op_type: str) -> bool:
        """Whether the accelerator runs ``op_type`` (None = every op: a CPU-only device)."""
        return self.supported_ops is None or op_type in self.supported_ops

    def source_summary(self) -> str:
        """The public documents cited, and how many figures are assumed or fitted, for listings."""
        urls = dict.fromkeys(u.rstrip(").,;") for text in self.sources.values() for u in _URL.findall(text))
        estimated = ("assumed", "initial", "fitted", "derived: geometric")
        guessed = sum(1 for text in self.sources.values() if text.startswith(estimated))
        parts = list(urls)
        if guessed:
            parts.append(f"{guessed} of {len(self.sources)} figures assumed/fitted/derived (see [sources])")
        return "; ".join(parts)


_URL = re.compile(r"https?://\S+")


def _fail(path: Path, key: str, rule: str, fix: str) -> ConfigError:
    return ConfigError(f"device profile {path}: {key}: {rule}; {fix}.")


def _check_tables(path: Path, raw: dict[str, Any]) -> None:
    where = f"device profile {path}"
    items: Iterable[tuple[str, Any]]
    check_known_keys(raw, [*SCHEMA[""], *(t for t in SCHEMA if t), *FREE_TABLES], where)
    for table, value in raw.items():
        if table in FREE_TABLES:
            continue
        if table in SCHEMA and table != "":
            if not isinstance(value, dict):
                raise _fail(path, table, f"must be a table [{table}], got {value!r}", "make it a table")
            allowed = SCHEMA[table]
            check_known_keys(value, sorted(allowed), f"{where} [{table}]")
            items = value.items()
            prefix = f"{table}."
        else:
            allowed, items, prefix = SCHEMA[""], [(table, value)], ""
        for key, item in items:
            want = allowed[key]
            if isinstance(item, bool) or not isinstance(item, want):
                names = "/".join(t.__name__ for t in (want if isinstance(want, tuple) else (want,)))
                raise _fail(path, prefix + key, f"must be {names}, got {item!r}", "fix the value")
            # TOML spells nan and inf; neither is a rate, a size or a time.
            if isinstance(item, (int, float)) and (not math.isfinite(item) or item < 0):
                raise _fail(path, prefix + key, f"must be >= 0 and finite, got {item!r}", "fix the value")
    for table, keys in REQUIRED.items():
        holder = raw if table == "" else raw.get(table, {})
        for key in keys:
            if key not in holder:
                raise _fail(path, f"{table + '.' if table else ''}{key}", "missing", "add it")


def _check_sources(path: Path, raw: dict[str, Any]) -> dict[str, str]:
    """Every numeric figure needs a non-empty source string."""
    sources = raw.get("sources", {})
    if not isinstance(sources, dict) or not all(isinstance(v, str) and v.strip() for v in sources.values()):
        raise _fail(path, "[sources]", "must map figure keys to non-empty strings",
                    'e.g. "compute.int8_macs_per_s" = "https://... (what it says)"')
    for table, value in raw.items():
        if table in (*FREE_TABLES, "qnn", "ops") or not isinstance(value, dict):
            continue
        for key, item in value.items():
            if isinstance(item, (int, float)) and f"{table}.{key}" not in sources:
                raise _fail(path, f"{table}.{key}", "has no source",
                            f'add "{table}.{key}" = "<where the figure comes from>" under [sources]')
    published = raw.get("published_latency", {})
    cited = raw.get("published_latency_sources", {})
    for key, value in published.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
            raise _fail(path, f"published_latency.{key}", f"must be milliseconds > 0, got {value!r}", "fix the value")
        if not str(cited.get(key, "")).strip():
            raise _fail(path, f"published_latency.{key}", "has no source",
                        f'add "{key}" = "<url and what it says>" under [published_latency_sources]')
    return dict(sources)


def profile_from_dict(raw: dict[str, Any], path: Path) -> DeviceProfile:
    """Validate one parsed profile; ConfigError names the file, key and fix."""
    _check_tables(path, raw)
    sources = _check_sources(path, raw)
    if raw["kind"] not in KINDS:
        raise _fail(path, "kind", f"must be one of {', '.join(KINDS)}, got {raw['kind']!r}", "fix the value")
    numerics = raw["numerics"]
    if numerics not in RATE_KEY:
        raise _fail(path, "numerics", f"must be one of {', '.join(RATE_KEY)}, got {numerics!r}", "fix the value")
    compute = {k: float(v) for k, v in raw.get("compute", {}).items()}
    if compute.get(RATE_KEY[numerics], 0) <= 0:
        raise _fail(path, f"compute.{RATE_KEY[numerics]}", f"must be > 0 for numerics {numerics!r}",
                    "give the device's effective rate in that numerics")
    memory, dispatch, fallback = raw["memory"], raw["dispatch"], raw.get("fallback", {})
    qnn = raw.get("qnn")
    if qnn is not None and not {"soc_model", "htp_arch"} <= set(qnn):
        raise _fail(path, "[qnn]", "needs soc_model and htp_arch", "e.g. soc_model = 43, htp_arch = 73 (SM8550)")
    ops = raw.get("ops", {}).get("supported")
    if ops is not None and not all(isinstance(o, str) for o in ops):
        raise _fail(path, "ops.supported", "must be a list of ONNX op types", 'e.g. ["Conv", "Gemm"]')
    if ops is not None and raw["kind"] == "npu" and not {"cpu_macs_per_s", "transfer_bytes_per_s"} <= set(fallback):
        raise _fail(path, "[fallback]", "an npu with an op list needs cpu_macs_per_s and transfer_bytes_per_s",
                    "add them (ops outside the list run on the CPU)")
    return DeviceProfile(
        name=raw["name"], kind=raw["kind"], description=raw["description"], numerics=numerics,
        soc=raw.get("soc"), path=path, compute=compute,
        dram_bytes_per_s=float(memory["dram_bytes_per_s"]),
        onchip_bytes=int(memory.get("onchip_bytes", 0)),
        onchip_bytes_per_s=float(memory.get("onchip_bytes_per_s", memory["dram_bytes_per_s"])),
        budget_bytes=int(memory["budget_bytes"]),
        per_op_s=float(dispatch["per_op_s"]), per_inference_s=float(dispatch["per_inference_s"]),
        fallback={k: float(v) for k, v in fallback.items()},
        efficiency={k: float(v) for k, v in raw.get("efficiency", {}).items()},
        supported_ops=frozenset(ops) if ops is not None else None,
        qnn=dict(qnn) if qnn is not None else None, sources=sources,
        published_latency={k: float(v) for k, v in raw.get("published_latency", {}).items()},
    )


def load_profile(path: Path) -> DeviceProfile:
    """Read and validate one profile file."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise _fail(path, "file", f"is not valid TOML ({exc})", "fix the syntax") from None
    except OSError as exc:
        raise _fail(path, "file", f"cannot be read ({exc.strerror})", "check the path") from None
    return profile_from_dict(raw, path)


def profile_dirs(env: Mapping[str, str] | None = None) -> list[Path]:
    """The built-in folder, then every folder named in $SHADOW_DEVICES."""
    value = (os.environ if env is None else env).get(ENV_VAR, "")
    user = [Path(p).expanduser() for p in value.split(os.pathsep) if p.strip()]
    for folder in user:
        if not folder.is_dir():
            raise ConfigError(f"${ENV_VAR}: {folder} is not a folder; name folders of *.toml device profiles.")
    return [BUILTIN_DIR, *user]


def load_profiles(folders: Iterable[Path]) -> dict[str, DeviceProfile]:
    """Every profile in ``folders``; a later folder may not reuse a name (that is an error, not an override)."""
    profiles: dict[str, DeviceProfile] = {}
    for folder in folders:
        for path in sorted(folder.glob("*.toml")):
            profile = load_profile(path)
            if profile.name in profiles:
                raise _fail(path, "name", f"{profile.name!r} is already defined by {profiles[profile.name].path}",
                            "give the profile a distinct name")
            profiles[profile.name] = profile
    return profiles

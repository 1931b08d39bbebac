"""The slim install: an edge app's runtime without torch, Ray, Optuna, pandas or SQLAlchemy.

1. Builds this project's wheel once, then installs it into a FRESH virtual
   environment with the tested pins: ``pip install -c constraints.txt WHEEL``
   (the base distribution: numpy and ONNX Runtime).
2. Checks that venv: the heavy packages are absent; ``import selection.runtime``
   works; ``shadow --help`` works; ``shadow history`` exits 2 with one line
   naming the ``[store]`` extra; and ``shadow serve`` on 127.0.0.1, pointed at a
   copy of a real channel folder (a tiny ONNX classifier promoted in a real
   store here, then only ``channels/`` copied, as onto a device), answers
   ``POST /predict`` with the same probabilities this process's runtime gives.
3. Without ``--quick``: installs ``WHEEL[store]`` and ``WHEEL[all]`` into two
   more fresh venvs, for their sizes.

Sizes are ``du`` of each venv's site-packages (bytes, apparent size).
Needs the local wheel folder pip is configured with (offline) or PyPI.

Usage: ``python benchmarks/slim_install.py [--quick] [--keep DIR]``.
The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from selection import Store, promote
from selection.runtime import ChannelRuntime
from selection.testing import FEATURES, add_tiny_candidates

REPO = Path(__file__).resolve().parents[1]
ABSENT_IN_SLIM = ("torch", "ray", "optuna", "pandas", "sqlalchemy", "onnx", "matplotlib", "pyarrow")
ROWS = [[0.5] * len(FEATURES), [-1.0] * len(FEATURES)]


def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]


def build_wheel(out: Path) -> Path:
    """This project's wheel, built with the running interpreter's setuptools (no download)."""
    result = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                  "-q", "-w", str(out), str(REPO)])
    if result.returncode != 0:
        raise SystemExit(f"building the wheel failed: {result.stderr.strip()}")
    (wheel,) = out.glob("shadow_sweep-*.whl")
    return wheel


def fresh_venv(path: Path, requirement: str) -> tuple[Path, float]:
    """A new venv at ``path`` with ``requirement`` installed against constraints.txt; seconds taken."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    result = run([str(path / "bin" / "python"), "-m", "pip", "install", "-q", "--no-input",
                  "-c", str(REPO / "constraints.txt"), requirement])
    if result.returncode != 0:
        raise SystemExit(f"pip install {requirement} failed: {result.stderr.strip()[-2000:]}")
    return path / "bin", time.perf_counter() - start


def site_packages_bytes(bin_dir: Path) -> int:
    (site,) = (bin_dir.parent / "lib").glob("python3*/site-packages")
    return sum(p.stat().st_size for p in site.rglob("*") if p.is_file() and not p.is_symlink())


def real_channel(root: Path) -> tuple[Path, Path, list[list[float]]]:
    """A workstation home with a real promotion, a device-style copy of its ``channels/`` only,
    and the probabilities the runtime gives for ``ROWS``."""
    with Store.open(root / "workstation", create=True) as store:
        add_tiny_candidates(store, ["c-slim"])
        promote(store, "c-slim", reason="slim_install benchmark")
        with ChannelRuntime(store.home.channels_dir) as runtime:
            expected = runtime.predict({"rows": ROWS})["probabilities"]
        edge = root / "edge"
        shutil.copytree(store.home.channels_dir, edge / "channels", symlinks=True)
    return store.home.root, edge, expected


def check_slim(bin_dir: Path, workstation: Path, edge: Path, expected: list[list[float]],
               ) -> dict[str, Any]:
    python, shadow = str(bin_dir / "python"), str(bin_dir / "shadow")
    probe = (f"import importlib.util, json; print(json.dumps([m for m in {ABSENT_IN_SLIM!r} "
             "if importlib.util.find_spec(m) is not None]))")
    present = json.loads(run([python, "-c", probe], check=True).stdout)
    runtime_import = run([python, "-c", "import selection.runtime, selection.runtime.server"])
    help_result = run([shadow, "--help"])
    history = run([shadow, "history", "--home", str(workstation)])  # a store it cannot read
    served = serve_and_predict(shadow, edge)
    close = served.get("probabilities") is not None and bool(
        np.allclose(served["probabilities"], expected, atol=1e-6))
    return {
        "heavy_present": present,
        "runtime_imports": runtime_import.returncode == 0,
        "help_ok": help_result.returncode == 0 and "serve" in help_result.stdout,
        "history_exit": history.returncode,
        "history_message": history.stderr.strip(),
        "history_names_store_extra": history.returncode == 2
        and history.stderr.count("\n") == 1 and "shadow-sweep[store]" in history.stderr,
        "serve_status": served.get("status"),
        "serve_matches_runtime": close,
        "serve_stderr": served.get("stderr"),
    }


def serve_and_predict(shadow: str, home: Path) -> dict[str, Any]:
    """Start ``shadow serve --port 0`` on loopback, POST /predict once, stop it with SIGTERM."""
    proc = subprocess.Popen([shadow, "serve", "--home", str(home), "--port", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    lines: list[str] = []
    try:
        while len(lines) < 5 and " on http://127.0.0.1:" not in (lines or [""])[-1]:
            lines.append(proc.stderr.readline())
        if " on http://127.0.0.1:" not in lines[-1]:
            return {"status": None, "stderr": "".join(lines).strip()}
        host, port = lines[-1].rsplit(" on http://", 1)[1].split(";")[0].strip().rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.request("POST", "/predict", body=json.dumps({"rows": ROWS}),
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        answer = json.loads(response.read())
        conn.close()
        return {"status": response.status, "probabilities": answer.get("probabilities"),
                "stderr": "".join(lines).strip()}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the slim venv only (no [store]/[all])")
    parser.add_argument("--keep", type=Path, default=None, help="build the venvs here and keep them")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="slim-install-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        wheel = build_wheel(root / "wheel")
        workstation, edge, expected = real_channel(root)
        slim_bin, slim_s = fresh_venv(root / "venv-slim", str(wheel))
        checks = check_slim(slim_bin, workstation, edge, expected)
        sizes = {"slim": site_packages_bytes(slim_bin)}
        seconds = {"slim": round(slim_s, 1)}
        if not args.quick:
            for extra in ("store", "all"):
                bin_dir, took = fresh_venv(root / f"venv-{extra}", f"{wheel}[{extra}]")
                sizes[extra] = site_packages_bytes(bin_dir)
                seconds[extra] = round(took, 1)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)

    mib = {k: round(v / 2**20, 1) for k, v in sizes.items()}
    for name, size in mib.items():
        print(f"{name:>5}: {size:8.1f} MiB site-packages, installed in {seconds[name]} s")
    for key, value in checks.items():
        print(f"  {key}: {value}")
    ok = (not checks["heavy_present"] and checks["runtime_imports"] and checks["help_ok"]
          and checks["history_names_store_extra"] and checks["serve_status"] == 200
          and checks["serve_matches_runtime"])
    print(json.dumps({
        "benchmark": "slim_install",
        "slim_mib": mib["slim"],
        "store_mib": mib.get("store"),
        "all_mib": mib.get("all"),
        "slim_fraction_of_all": round(sizes["slim"] / sizes["all"], 3) if "all" in sizes else None,
        "install_s": seconds,
        "slim_ok": ok,
        **{k: v for k, v in checks.items() if k not in ("serve_stderr", "history_message")},
    }))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

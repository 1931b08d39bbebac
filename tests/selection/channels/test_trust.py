"""Production trusts only what the store says: hostile links, folders, files and models, for real.

Each test tampers with a real home the way someone with write access to the files (but
not the database) could, then checks that the runtime refuses, ``shadow doctor`` reports,
``doctor --repair`` restores what the history says and ``shadow serve`` refuses to start.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import update

from selection import Store, history, promote, rollback
from selection.artifacts.content import sha256_bytes
from selection.artifacts.external_data import ExternalDataError
from selection.atomic import replace_symlink_atomic
from selection.channels.doctor import Finding, diagnose, repair
from selection.channels.layout import version_name
from selection.channels.trust import store_verifier
from selection.runtime import ChannelRuntime, ModelLoadError, RuntimeEvent
from selection.store import schema
from selection.testing import FEATURES, add_tiny_candidates
from tests.selection.hostile import add_candidate, file_reading_classifier, forged_version

REPO = Path(__file__).resolve().parents[3]
ROW = [0.5] * len(FEATURES)
FILES = "channel production files"


@pytest.fixture
def tiny(store: Store) -> Store:
    """Rows 1 (c-a) and 2 (c-b) of production; c-c never promoted."""
    add_tiny_candidates(store, ["c-a", "c-b", "c-c"])
    promote(store, "c-a")
    promote(store, "c-b")
    return store


def _link(store: Store) -> Path:
    return store.home.channel_dir("production")


def _current(store: Store) -> Path:
    row = history(store, channel="production")[0]
    return store.home.channels_dir / ".versions" / version_name("production", row.history_id,
                                                                row.sha256)


def _finding(store: Store) -> Finding:
    return next(f for f in diagnose(store) if f.check == FILES)


def _model_of(store: Store, candidate_id: str) -> bytes:
    return store.artifacts.read_verified(store.get_candidate(candidate_id).onnx_sha256)


def _repaired(store: Store) -> None:
    done = repair(store)
    assert [f.status for f in done if f.check == FILES] == ["fixed", "ok"], done
    assert os.readlink(_link(store)) == f".versions/{_current(store).name}"
    with ChannelRuntime(store.home.channels_dir, reload=False,
                        verify=store_verifier(store, "production")) as runtime:
        assert runtime.predict({"rows": [ROW]})["candidate_id"] == "c-b"


def _serve(store: Store, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """``shadow serve`` as a user runs it; it must refuse before listening (or it would hang)."""
    return subprocess.run(
        [sys.executable, "-m", "shadow", "serve", "--home", str(store.home.root), "--port", "0"],
        cwd=cwd, capture_output=True, text=True, timeout=60,
        env={**os.environ, "SHADOW_STORE": "", "PYTHONPATH": str(REPO)},
    )


def _refused_one_line(result: subprocess.CompletedProcess[str], *parts: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("shadow serve: error: ")
    for part in parts:
        assert part in result.stderr, result.stderr


# -- hole 1: links and folders outside the store's knowledge ------------------------------

def test_a_link_to_a_folder_outside_the_home_is_refused_reported_and_repaired(
        tiny: Store, tmp_path: Path) -> None:
    # The old check compared basenames only: name the outside folder like the real version.
    outside = forged_version(tiny, tmp_path / "elsewhere" / _current(tiny).name,
                             _model_of(tiny, "c-c"), like=_current(tiny))
    replace_symlink_atomic(_link(tiny), outside)

    with pytest.raises(ModelLoadError, match="must lead to a version inside") as info:
        ChannelRuntime(tiny.home.channels_dir).start()
    assert "resolves to" in str(info.value) and str(outside) in str(info.value)
    finding = _finding(tiny)
    assert finding.status == "fail" and "outside it" in finding.detail
    assert "--repair" in (finding.fix or "")
    _refused_one_line(_serve(tiny), "must lead to a version inside", "doctor --repair")

    before = {p.name: p.read_bytes() for p in outside.iterdir()}
    _repaired(tiny)
    assert {p.name: p.read_bytes() for p in outside.iterdir()} == before  # never written to


def test_a_running_runtime_never_swaps_to_an_outside_folder(tiny: Store, tmp_path: Path) -> None:
    events: list[RuntimeEvent] = []
    runtime = ChannelRuntime(tiny.home.channels_dir, reload=False, on_event=events.append)
    runtime.start()
    outside = forged_version(tiny, tmp_path / "x" / "production-9-0123456789ab",
                             _model_of(tiny, "c-c"), like=_current(tiny))
    replace_symlink_atomic(_link(tiny), os.path.relpath(outside, tiny.home.channels_dir))
    assert runtime.check_now() is False
    assert events[-1].kind == "refused" and "must lead to a version inside" in str(events[-1].detail)
    assert runtime.predict({"rows": [ROW]})["candidate_id"] == "c-b"


def test_a_version_entry_symlinked_outside_is_refused_and_rebuilt_in_place(
        tiny: Store, tmp_path: Path) -> None:
    real = _current(tiny)
    outside = tmp_path / "moved"
    shutil.move(real, outside)
    (outside / "model.onnx").write_bytes(_model_of(tiny, "c-c"))
    manifest = json.loads((outside / "manifest.json").read_text())
    manifest["sha256"] = tiny.get_candidate("c-c").onnx_sha256
    (outside / "manifest.json").write_text(json.dumps(manifest))
    os.symlink(outside, real)  # .versions/<the current name> -> a folder outside

    with pytest.raises(ModelLoadError, match="which is outside it"):
        ChannelRuntime(tiny.home.channels_dir).start()
    assert _finding(tiny).status == "fail"
    before = {p.name: p.read_bytes() for p in outside.iterdir()}
    _repaired(tiny)
    assert real.is_dir() and not real.is_symlink()
    assert {p.name: p.read_bytes() for p in outside.iterdir()} == before


def test_a_symlinked_model_file_is_refused_and_repaired(tiny: Store, tmp_path: Path) -> None:
    model = _current(tiny) / "model.onnx"
    elsewhere = tmp_path / "same-bytes.onnx"
    elsewhere.write_bytes(model.read_bytes())  # even the right bytes: a link could change later
    model.unlink()
    model.symlink_to(elsewhere)
    with pytest.raises(ModelLoadError, match=r"model\.onnx must be a regular file, not a symlink"):
        ChannelRuntime(tiny.home.channels_dir).start()
    finding = _finding(tiny)
    assert finding.status == "fail" and "must be regular files, not symlinks" in finding.detail
    _repaired(tiny)
    assert not model.is_symlink()


def test_a_version_the_store_never_recorded_is_served_only_without_a_store(tiny: Store) -> None:
    model = _model_of(tiny, "c-c")
    name = version_name("production", 2, sha256_bytes(model))  # named as a real one would be
    forged = forged_version(tiny, tiny.home.channels_dir / ".versions" / name, model,
                            like=_current(tiny), history_id=2)
    replace_symlink_atomic(_link(tiny), f".versions/{forged.name}")

    # The runtime alone trusts the manifest inside its channels folder (documented boundary).
    with ChannelRuntime(tiny.home.channels_dir, reload=False) as runtime:
        assert runtime.model.candidate_id == "c-forged"
    with pytest.raises(ModelLoadError, match="may only serve a version the store recorded"):
        ChannelRuntime(tiny.home.channels_dir, verify=store_verifier(tiny, "production")).start()
    finding = _finding(tiny)
    assert finding.status == "fail" and "never recorded" in finding.detail
    _refused_one_line(_serve(tiny), "is no history row of 'production'")
    _repaired(tiny)


def test_an_edited_manifest_is_refused_with_a_store_and_repaired(tiny: Store) -> None:
    path = _current(tiny) / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["model_io"]["classes"] = ["rain", "dry"]  # the same model, answers relabelled
    path.write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match="its model_io differ"):
        ChannelRuntime(tiny.home.channels_dir, verify=store_verifier(tiny, "production")).start()
    finding = _finding(tiny)
    assert finding.status == "fail" and "model_io differ" in finding.detail
    _refused_one_line(_serve(tiny), "its model_io differ")
    _repaired(tiny)


def test_a_link_moved_back_to_a_retired_row_is_refused_but_a_rollback_is_taken(tiny: Store) -> None:
    rows = history(tiny, channel="production")  # newest first: row 2 (c-b), row 1 (c-a)
    events: list[RuntimeEvent] = []
    runtime = ChannelRuntime(tiny.home.channels_dir, reload=False, on_event=events.append,
                             verify=store_verifier(tiny, "production"))
    runtime.start()
    old = version_name("production", rows[1].history_id, rows[1].sha256)
    replace_symlink_atomic(_link(tiny), f".versions/{old}")
    assert runtime.check_now() is False
    assert "moves only forward in its history" in str(events[-1].detail)
    assert runtime.model.candidate_id == "c-b"
    rollback(tiny)  # the same model back, as a new row: that is allowed
    assert runtime.check_now() is True and runtime.model.candidate_id == "c-a"


def test_serve_follows_real_promotions_with_the_store_check(tiny: Store) -> None:
    runtime = ChannelRuntime(tiny.home.channels_dir, reload=False,
                             verify=store_verifier(tiny, "production"))
    runtime.start()
    promote(tiny, "c-c")
    assert runtime.check_now() is True and runtime.model.candidate_id == "c-c"


# -- hole 2: a model that reads files ------------------------------------------------------

def test_promote_refuses_a_model_that_reads_files(tiny: Store) -> None:
    add_candidate(tiny, "c-evil", file_reading_classifier("README.md"))
    before = history(tiny)
    with pytest.raises(ExternalDataError, match="must be a self-contained ONNX model") as info:
        promote(tiny, "c-evil")
    assert "\n" not in str(info.value) and "'leak' points at 'README.md'" in str(info.value)
    assert history(tiny) == before
    assert not list((tiny.home.channels_dir / ".versions").glob("*-" + tiny.get_candidate(
        "c-evil").onnx_sha256[:12]))


def test_a_file_reader_promoted_by_a_database_edit_is_refused_everywhere(tiny: Store) -> None:
    evil = add_candidate(tiny, "c-evil", file_reading_classifier("README.md"))
    sha = evil.onnx_sha256
    row = history(tiny, channel="production")[0]
    with tiny.transaction() as conn:  # what an attacker with the database does
        conn.execute(update(schema.promotions).where(schema.promotions.c.history_id ==
                                                     row.history_id)
                     .values(candidate_id="c-evil", sha256=sha))
        conn.execute(update(schema.channels).where(schema.channels.c.channel == "production")
                     .values(candidate_id="c-evil", sha256=sha))

    # Repair refuses to materialize it: the files keep serving the good model.
    served = os.readlink(_link(tiny))
    done = repair(tiny)
    assert any(f.status == "fail" and "could not repair" in f.detail
               and "self-contained" in f.detail for f in done)
    assert os.readlink(_link(tiny)) == served

    # Then the files too, by hand: model and manifest agree, the store agrees.
    version = tiny.home.channels_dir / ".versions" / version_name("production", row.history_id, sha)
    forged_version(tiny, version, file_reading_classifier("README.md"), like=_current_of(served, tiny))
    manifest = json.loads((version / "manifest.json").read_text())
    manifest.update(candidate_id="c-evil")
    (version / "manifest.json").write_text(json.dumps(manifest))
    replace_symlink_atomic(_link(tiny), f".versions/{version.name}")

    finding = _finding(tiny)
    assert finding.status == "fail" and "stored in other files" in finding.detail
    assert "'leak' -> 'README.md'" in finding.detail and "rollback" in (finding.fix or "")
    with pytest.raises(ModelLoadError, match="must be a self-contained ONNX model"):
        ChannelRuntime(tiny.home.channels_dir).start()
    # Run from the repository, where README.md is: before, /predict answered its bytes.
    _refused_one_line(_serve(tiny, cwd=REPO), "must be a self-contained ONNX model",
                      "'leak' points at 'README.md'")
    repair(tiny)
    assert _finding(tiny).status == "fail"  # the artifact itself is unsafe: roll back instead


def _current_of(link_text: str, store: Store) -> Path:
    return store.home.channels_dir / link_text


@pytest.mark.parametrize("size", ['"x"', "[]", "1e400", "true", "null"])
def test_a_manifest_size_that_is_no_int_never_crashes_the_store_check(tiny: Store,
                                                                      size: str) -> None:
    """size_bytes is descriptive: junk there is no traceback at start or on a swap."""
    path = _current(tiny) / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["size_bytes"] = "@SIZE@"
    path.write_text(json.dumps(manifest).replace('"@SIZE@"', size))  # 1e400 is not JSON-dumpable
    with ChannelRuntime(tiny.home.channels_dir, reload=False,
                        verify=store_verifier(tiny, "production")) as runtime:
        assert runtime.model.candidate_id == "c-b"
        promote(tiny, "c-c")  # a swap checks the new version the same way
        path = _current(tiny) / "manifest.json"
        path.write_text(path.read_text().replace('"size_bytes": ', f'"size_bytes": {size}, "was": '))
        assert f'"size_bytes": {size}, "was": ' in path.read_text()
        assert runtime.check_now() is True and runtime.model.candidate_id == "c-c"


def test_a_versions_folder_that_is_a_symlink_is_refused(tiny: Store, tmp_path: Path) -> None:
    """.versions -> another home's .versions: containment must not follow it, nor promotion."""
    from selection.errors import StoreError

    versions = tiny.home.channels_dir / ".versions"
    elsewhere = tmp_path / "other-home" / "channels" / ".versions"
    elsewhere.parent.mkdir(parents=True)
    shutil.move(versions, elsewhere)
    versions.symlink_to(elsewhere)
    with pytest.raises(ModelLoadError) as info:
        ChannelRuntime(tiny.home.channels_dir, reload=False).start()
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{versions} must be a real folder, not a symlink")
    before = sorted(p.name for p in elsewhere.iterdir())
    with pytest.raises(StoreError, match="must be a real folder, not a symlink") as refused:
        promote(tiny, "c-c")
    assert "\n" not in str(refused.value) and "nothing was changed" in str(refused.value)
    assert sorted(p.name for p in elsewhere.iterdir()) == before  # nothing written there
    assert [r.candidate_id for r in history(tiny, channel="production")][0] == "c-b"
    finding = _finding(tiny)  # doctor reports it too
    assert finding.status == "fail" and "must be a real folder, not a symlink" in finding.detail

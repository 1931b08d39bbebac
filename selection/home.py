"""Where shadow-sweep keeps its state on disk: the SHADOW_HOME directory.

Layout (see DESIGN.md): ``shadow.db`` (the SQLite metadata store, unless
``SHADOW_STORE`` points elsewhere), ``artifacts/<sha256>`` and
``channels/<channel>``. Resolving a home never touches the disk; only
:meth:`Home.ensure` creates directories, so read-only commands run against a
missing home fail cleanly instead of leaving an empty store behind.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from selection.errors import ConfigError, NotFoundError

#: Environment variable naming the home directory (flag ``--home`` wins).
HOME_ENV = "SHADOW_HOME"
#: The home used when neither ``--home`` nor ``SHADOW_HOME`` is given.
DEFAULT_HOME = Path(".shadow")


@dataclass(frozen=True)
class Home:
    """An absolute SHADOW_HOME path and the well-known paths inside it."""

    root: Path

    @classmethod
    def resolve(cls, path: str | Path | None = None) -> Home:
        """The home at ``path``, else ``$SHADOW_HOME``, else ``./.shadow``.

        The path is made absolute (so messages and symlinks stay valid if the
        process changes directory) but not resolved through symlinks.
        """
        if path is None or str(path) == "":
            path = os.environ.get(HOME_ENV) or DEFAULT_HOME
        return cls(Path(path).expanduser().absolute())

    @property
    def db_path(self) -> Path:
        """The embedded SQLite store."""
        return self.root / "shadow.db"

    @property
    def artifacts_dir(self) -> Path:
        """Content-addressed artifacts, ``<sha256>``."""
        return self.root / "artifacts"

    @property
    def channels_dir(self) -> Path:
        """One symlink per channel, plus the version directories they point to."""
        return self.root / "channels"

    def channel_dir(self, name: str) -> Path:
        """The directory an edge app reads for channel ``name`` (a symlink)."""
        return self.channels_dir / name

    def exists(self) -> bool:
        """Whether the home directory exists (it may still hold no store)."""
        return self.root.is_dir()

    def check_folder(self) -> Home:
        """Raise ConfigError if the home's path (or an entry inside it) is a file, not a folder.

        ``--home notes.txt`` must be one line saying so, not a mkdir error or
        "no store" that sends the user looking for a database.
        """
        for directory in (self.root, self.artifacts_dir, self.channels_dir):
            if directory.exists() and not directory.is_dir():
                raise ConfigError(
                    f"the shadow home must be a folder; {directory} is a file; pass "
                    f"--home (or set {HOME_ENV}) to a folder, or move the file away"
                )
        return self

    def ensure(self) -> Home:
        """Create the home and its subdirectories if missing; returns self.

        ConfigError if a file stands where one of them goes; a folder the user
        may not write to raises ConfigError naming it and the fix.
        """
        self.check_folder()
        for directory in (self.root, self.artifacts_dir, self.channels_dir):
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"cannot create the shadow home folder {directory} ({exc.strerror}); make "
                    f"its parent writable, or pass --home (or set {HOME_ENV}) to a folder you "
                    "can write to"
                ) from None
        return self

    def require(self) -> Home:
        """Raise NotFoundError unless the home holds a store; returns self.

        Read-only commands call this instead of :meth:`ensure`.
        """
        self.check_folder()
        if not self.db_path.is_file():
            raise NotFoundError(
                f"no shadow store at {self.root} (expected {self.db_path}); "
                "run `shadow sweep run CONFIG` first, or pass `--home` "
                f"(or set {HOME_ENV}) to point at an existing home"
            )
        return self

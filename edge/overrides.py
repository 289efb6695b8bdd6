"""The installer's overrides: what was changed on the local page, kept across
restarts.

What the installer changes on the local page (``edge.local_api``) is kept in the
**overrides file** beside the outbox (``StatePaths.overrides``:
``<outbox stem>-overrides.json``, JSON, written atomically, mode 0600) and
applied on every start on top of the TOML config: ``main_fuse_a`` replaces
``site.main_fuse_a``; ``chargers`` (approved on the page) are added to
``[[chargers]]`` (a charger the TOML file names itself wins). Delete the file to
forget them.

``edge.config.load_config`` applies them (``apply_overrides``), so the config it
returns is the one in force; applying them again changes nothing, which lets the
agent make sure of it for a config built any other way. An unreadable or
invalid overrides file is a ``ConfigError`` (``fusebox edge run`` and
``fusebox edge check`` exit 2): running on a fuse limit higher than the one the
installer set would not be safe.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge import ConfigError
from edge.claim import write_private_file
from edge.ocpp.config import ChargerConfig
from edge.paths import StatePaths

if TYPE_CHECKING:  # edge.config applies the overrides: no import back at run time
    from edge.config import EdgeConfig

__all__ = [
    "Overrides",
    "OverridesFile",
    "apply_overrides",
    "overrides_note",
    "overrides_path_beside",
]

log = logging.getLogger("fusebox.edge.overrides")

_FIX = (
    "correct it, or delete it to forget the fuse limit and the chargers "
    "approved on the local page"
)


class OverridesFile(BaseModel):
    """The overrides file's content (version 1)."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    main_fuse_a: float | None = Field(default=None, gt=0, le=2000)
    chargers: list[ChargerConfig] = Field(default_factory=list)


def overrides_path_beside(outbox_path: Path) -> Path:
    """Where the overrides of the gateway with this outbox are kept
    (``StatePaths.overrides``)."""
    return StatePaths.beside(outbox_path).overrides


def apply_overrides(config: EdgeConfig) -> EdgeConfig:
    """``config`` with the overrides file beside its outbox on top: the config in
    force. ``ConfigError`` when that file cannot be read or is not valid."""
    return Overrides(overrides_path_beside(config.outbox.path)).apply(config)


class Overrides:
    """The installer's changes made on the local page, kept across restarts.

    Reads ``path`` when made (``ConfigError`` if it is damaged; a missing file is
    no overrides); each change is written through at once (``OSError`` if it
    cannot be).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = self._load()

    def _load(self) -> OverridesFile:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return OverridesFile()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{self.path}: cannot read ({exc}); {_FIX}") from None
        try:
            return OverridesFile.model_validate_json(text)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(top level)"
            raise ConfigError(
                f"{self.path}: not a valid overrides file ({where}: {first['msg']}); "
                + _FIX
            ) from None

    def _save(self) -> None:
        chargers = []
        for c in self.data.chargers:
            entry = c.model_dump(mode="json", exclude_defaults=True)
            entry["id"] = c.id
            if c.password is not None:
                entry["password"] = c.password.get_secret_value()
            chargers.append(entry)
        doc: dict[str, Any] = {"version": 1}
        if self.data.main_fuse_a is not None:
            doc["main_fuse_a"] = self.data.main_fuse_a
        doc["chargers"] = chargers
        write_private_file(self.path, json.dumps(doc, indent=2) + "\n")

    def set_main_fuse(self, main_fuse_a: float) -> None:
        """Keep the fuse limit the installer set (written at once)."""
        self.data.main_fuse_a = main_fuse_a
        self._save()

    def add_charger(self, charger: ChargerConfig) -> None:
        """Keep a charger the installer approved, replacing one of the same id."""
        kept = [c for c in self.data.chargers if c.id != charger.id]
        self.data.chargers = [*kept, charger]
        self._save()

    def apply(self, config: EdgeConfig) -> EdgeConfig:
        """``config`` with the overrides on top (a new object; ``config`` stays).

        Applying to a config that has them already returns it unchanged, and
        logs nothing.
        """
        update: dict[str, Any] = {}
        fuse = self.data.main_fuse_a
        if fuse is not None and fuse != config.site.main_fuse_a:
            log.info(
                "overrides: main fuse %g A as set on the local page (the config "
                "file says %g A; %s)",
                fuse,
                config.site.main_fuse_a,
                self.path,
            )
            update["site"] = config.site.model_copy(update={"main_fuse_a": fuse})
        added = self._chargers_to_add(config)
        if added:
            log.info(
                "overrides: %d charger(s) approved on the local page: %s",
                len(added),
                ", ".join(c.id for c in added),
            )
            update["chargers"] = [*config.chargers, *added]
        return config.model_copy(update=update) if update else config

    def _chargers_to_add(self, config: EdgeConfig) -> list[ChargerConfig]:
        in_config = {c.id: c for c in config.chargers}
        added = []
        for c in self.data.chargers:
            there = in_config.get(c.id)
            if there is None:
                added.append(c)
            elif there != c:
                log.info(
                    "overrides: charger %s is in the config file now; the approval "
                    "in %s is not used",
                    c.id,
                    self.path,
                )
            # else: this very approval, applied already
        return added


def overrides_note(config: EdgeConfig) -> str | None:
    """One line on what the overrides file beside the outbox changes in
    ``config`` (the config in force, ``load_config``'s); None when nothing."""
    overrides = Overrides(overrides_path_beside(config.outbox.path))
    data = overrides.data
    parts = []
    if data.main_fuse_a is not None:
        parts.append(f"main fuse {config.site.main_fuse_a:g} A")
    approved = [c.id for c in data.chargers if c in config.chargers]
    if approved:
        parts.append("charger(s) approved there: " + ", ".join(approved))
    if not parts:
        return None
    return f"set on the local page ({overrides.path}): " + "; ".join(parts)

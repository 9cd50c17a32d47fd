"""Run folders: one run at a time, and only the run's own files read back.

A run holds its folder with a lock file (:class:`RunLock`, created
atomically with ``O_EXCL``, holding the process id, host, start time and
command, removed when the run ends); a second run into the folder is
refused while the first lives, and the lock of a process that is gone is
recognised, reported and replaced.

Every file a run reads back is proven to be its own: ``run.json``, each
checkpoint and each finished run's state carry the run's *owner* record
(:func:`owner`: a fingerprint of the resolved configuration and the
package version, the configuration itself, and the run's identity, its
seed and fold), compared on reading (:func:`check_owner`); a file of
another configuration or run is never used.

A new run into a folder that already holds one is refused unless the
caller asks to ``resume`` it (same configuration only) or to ``overwrite``
it (the earlier run's files are deleted first): :func:`prepare_folder`.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from .io import strict_json

log = logging.getLogger("tgnn_transformers.train")

#: The configuration, package version and fingerprint a run was started
#: with.
RUN_FILE = "run.json"
#: What a failed run leaves: the exception and its traceback.
ERROR_FILE = "error.json"
#: The lock of the run that holds the folder.
LOCK_FILE = "run.lock"
#: The files and folders a run writes (what ``overwrite`` deletes; other
#: files in the folder are left alone).
RUN_FILES = (RUN_FILE, "metrics.json", "history.csv", "curves.png",
             ERROR_FILE)
#: Where the runs whose recipe exports something (the language model:
#: best weights and vocabulary) leave it, one ``<run>.pt`` each.
MODELS_DIR = "models"
RUN_FOLDERS = ("checkpoints", MODELS_DIR)


class RunFolderError(ValueError):
    """A run folder cannot be used as asked: it is not a writable folder,
    another run holds it, or it holds an earlier run."""


class ResumeError(RunFolderError):
    """``--resume`` of a run with other settings, or a file that belongs
    to another run."""


# --------------------------------------------------------------------------
# What a run is
# --------------------------------------------------------------------------

def _canonical(config: Mapping[str, Any]) -> Dict[str, Any]:
    """The configuration as ``run.json`` stores it (strict JSON values)."""
    return json.loads(json.dumps(strict_json(dict(config)), sort_keys=True,
                                 default=str))


def fingerprint(config: Mapping[str, Any], version: str) -> str:
    """A short hash of the resolved configuration and package version."""
    text = json.dumps({"config": _canonical(config), "version": version},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def owner(config: Mapping[str, Any], version: str,
          run: Optional[Mapping[str, int]] = None) -> Dict[str, Any]:
    """The record stored in every file of one run (``run``: its seed and
    fold; ``None`` for the whole experiment, as in ``run.json``)."""
    record = {"fingerprint": fingerprint(config, version),
              "tgnn_transformers": version, "config": _canonical(config)}
    if run is not None:
        record["run"] = {k: int(v) for k, v in run.items()}
    return record


def differences(before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    """``key: old -> new, ...`` of the keys whose values differ."""
    keys = sorted(k for k in set(before) | set(after)
                  if before.get(k) != after.get(k))
    return ", ".join(f"{k}: {before.get(k)!r} -> {after.get(k)!r}"
                     for k in keys)


def check_owner(state: Mapping[str, Any], expected: Mapping[str, Any],
                path: Path) -> None:
    """Raises :class:`ResumeError` unless the checkpoint ``state`` read
    from ``path`` belongs to the run ``expected`` (an :func:`owner`
    record), naming what differs."""
    found = state.get("owner") if isinstance(state, Mapping) else None
    if not isinstance(found, Mapping) or "fingerprint" not in found:
        raise ResumeError(f"{path} does not record the run it belongs to "
                          "(written by an older version or by hand): it is "
                          "not used; delete it, or start over with "
                          "--overwrite")
    if found.get("run") != expected.get("run"):
        raise ResumeError(
            f"{path} belongs to run {_run_words(found.get('run'))}, not "
            f"{_run_words(expected.get('run'))}: it is not used; delete it, "
            "or start over with --overwrite")
    if found["fingerprint"] != expected["fingerprint"]:
        before = {**found.get("config", {}),
                  "tgnn_transformers": found.get("tgnn_transformers")}
        after = {**expected["config"],
                 "tgnn_transformers": expected["tgnn_transformers"]}
        raise ResumeError(
            f"{path} was written by a run with other settings "
            f"({differences(before, after) or 'fingerprint differs'}): it "
            "is not used; delete it, or start over with --overwrite")


def _run_words(run: Any) -> str:
    if not isinstance(run, Mapping):
        return "?"
    return " ".join(f"{k} {v}" for k, v in run.items())


# --------------------------------------------------------------------------
# The lock
# --------------------------------------------------------------------------

def _process_start(pid: int) -> Optional[int]:
    """The start time of process ``pid`` in clock ticks since boot (Linux),
    or ``None`` when it cannot be read; it tells a process from a later one
    that got the same id."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        return int(text[text.rindex(")") + 2:].split()[19])
    except (ValueError, IndexError):
        return None


def _alive(pid: int, start: Optional[int]) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    except OSError:
        return True
    now = _process_start(pid)
    return start is None or now is None or now == start


def _describe_holder(holder: Mapping[str, Any]) -> str:
    return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
            f"started {holder.get('started', '?')}: "
            f"{holder.get('command', '?')}")


class RunLock:
    """The lock file ``LOCK_FILE`` of a run folder, created with ``O_EXCL``
    (one holder at a time); a context manager.  :meth:`acquire` creates
    the folder, refuses a folder held by a live process (naming it), and
    replaces the lock of one that is gone (with a warning)."""

    #: A lock file younger than this whose content cannot be read yet is
    #: being written by its holder; older, it was left half-written.
    FRESH_SECONDS = 10.0

    def __init__(self, folder: Path, command: Optional[str] = None):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        if command is None:
            command = (" ".join([Path(sys.argv[0]).name] + sys.argv[1:])
                       if sys.argv else "?")
        self.command = command
        self.record: Optional[Dict[str, Any]] = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _read(self, path: Optional[Path] = None) -> Optional[Dict[str, Any]]:
        try:
            value = json.loads((path or self.path).read_text())
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def acquire(self) -> None:
        make_folder(self.folder)
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "process_start": _process_start(os.getpid()),
                  "started": datetime.datetime.now().astimezone().isoformat(
                      timespec="seconds"),
                  "command": self.command}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY,
                             0o644)
            except FileExistsError:
                self._replace_if_stale()
                continue
            except OSError as exc:
                raise RunFolderError(
                    f"{self.folder}: cannot create the run's lock file "
                    f"({exc.strerror or exc}); choose a writable --out"
                ) from None
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
                f.flush()
                os.fsync(f.fileno())
            self.record = record
            return
        raise RunFolderError(f"{self.folder}: could not take the lock "
                             f"{self.path}; try again")

    def _replace_if_stale(self) -> None:
        """Raises :class:`RunFolderError` when the lock's holder may be
        alive; removes the lock of one that is gone."""
        holder = self._read()
        if holder is None:
            try:
                age = (datetime.datetime.now().timestamp() -
                       self.path.stat().st_mtime)
            except FileNotFoundError:
                return  # released meanwhile: try again
            if age < self.FRESH_SECONDS:
                raise RunFolderError(
                    f"{self.folder} is being taken by another run (its lock "
                    f"{self.path} was just created); use another --out")
        elif holder.get("host") != socket.gethostname() or _alive(
                int(holder.get("pid", -1)), holder.get("process_start")):
            raise RunFolderError(
                f"{self.folder} is in use by another run "
                f"({_describe_holder(holder)}); wait for it to end or use "
                f"another --out (if that run is gone, delete {self.path})")
        # Take the stale lock over by renaming it (atomic: of two processes
        # that both found it stale, one renames it), then check that what
        # was renamed is the stale lock and not a new holder's.
        aside = self.path.with_name(f"{LOCK_FILE}.stale.{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        taken = self._read(aside)
        if taken != holder:
            try:  # a live holder's lock: put it back, never over another
                os.link(aside, self.path)
            except OSError:
                pass
            aside.unlink(missing_ok=True)
            raise RunFolderError(
                f"{self.folder} is in use by another run "
                f"({_describe_holder(taken or {})}); use another --out")
        aside.unlink(missing_ok=True)
        what = ("a lock without a readable holder" if holder is None else
                f"the lock of a run that is no longer running "
                f"({_describe_holder(holder)})")
        log.warning("%s: replacing %s", self.folder, what)

    def release(self) -> None:
        """Removes the lock if this object holds it."""
        if self.record is None:
            return
        if self._read() == self.record:
            self.path.unlink(missing_ok=True)
        self.record = None


def make_folder(folder: Path) -> None:
    """Creates the run folder; a :class:`RunFolderError` names it and what
    to do when it is a file or cannot be created."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"{folder} is a file, not a folder; choose "
                             "another --out")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunFolderError(f"cannot create the run folder {folder} "
                             f"({exc.strerror or exc}); choose a writable "
                             "--out") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise RunFolderError(f"the run folder {folder} is not writable; "
                             "choose a writable --out")


def check_folder(folder: Path) -> None:
    """What the command line checks before any work: ``folder`` is a
    folder (or can be one) and writable."""
    folder = Path(folder)
    if folder.exists():
        make_folder(folder)
        return
    parent = folder.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise RunFolderError(f"cannot create the run folder {folder}: "
                             f"{parent} is a file; choose another --out")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RunFolderError(f"cannot create the run folder {folder}: "
                             f"{parent} is not writable; choose a writable "
                             "--out")


# --------------------------------------------------------------------------
# A run's files
# --------------------------------------------------------------------------

def earlier_run(folder: Path) -> List[str]:
    """The run files ``folder`` holds (an earlier run's)."""
    folder = Path(folder)
    found = [name for name in RUN_FILES if (folder / name).exists()]
    found += [name + "/" for name in RUN_FOLDERS
              if (folder / name).is_dir() and any((folder / name).iterdir())]
    return found


def _state_words(folder: Path) -> str:
    if (folder / "metrics.json").exists():
        return "a finished run"
    if (folder / ERROR_FILE).exists():
        return "a failed run"
    return "an unfinished run"


def clear_run(folder: Path) -> List[str]:
    """Deletes an earlier run's files (only those, see
    :data:`RUN_FILES`); returns what it deleted."""
    folder = Path(folder)
    removed = earlier_run(folder)
    for name in RUN_FILES:
        (folder / name).unlink(missing_ok=True)
    for name in RUN_FOLDERS:
        shutil.rmtree(folder / name, ignore_errors=True)
    return removed


def read_run_file(folder: Path) -> Dict[str, Any]:
    """``run.json`` of ``folder``; :class:`ResumeError` naming it when it is
    damaged."""
    path = Path(folder) / RUN_FILE
    try:
        recorded = json.loads(path.read_text())
    except UnicodeDecodeError:
        recorded = None
    except ValueError as exc:
        raise ResumeError(f"{path} is damaged ({exc}): the run cannot be "
                          "resumed honestly; start over with --overwrite")
    except OSError as exc:
        raise ResumeError(f"cannot read {path} ({exc.strerror or exc}); "
                          "check the folder's permissions") from None
    if not isinstance(recorded, dict) or not isinstance(
            recorded.get("config"), dict):
        raise ResumeError(f"{path} is damaged (not a run record): the run "
                          "cannot be resumed honestly; start over with "
                          "--overwrite")
    return recorded


def check_resumable(folder: Path, record: Mapping[str, Any]) -> None:
    """Raises :class:`ResumeError` unless the run recorded in ``folder``
    has exactly this configuration and package version (``record``: an
    :func:`owner` record of the experiment)."""
    folder = Path(folder)
    if not (folder / RUN_FILE).exists():
        if earlier_run(folder):
            raise ResumeError(f"{folder} has run files but no {RUN_FILE} "
                              "recording their configuration: cannot "
                              "resume it honestly; start over with "
                              "--overwrite")
        return
    recorded = read_run_file(folder)
    before = {**recorded.get("config", {}),
              "tgnn_transformers": recorded.get("tgnn_transformers")}
    after = {**record["config"],
             "tgnn_transformers": record["tgnn_transformers"]}
    differ = differences(before, after)
    if differ:
        raise ResumeError(f"--resume: the run in {folder} was started with "
                          f"other settings ({differ}); resume it with the "
                          "recorded settings, use a new --out, or replace "
                          "it with --overwrite")


def prepare_folder(folder: Path, record: Mapping[str, Any], *,
                   resume: bool, overwrite: bool) -> None:
    """Makes ``folder`` ready for the run ``record`` (its :func:`owner`
    record; call with the lock held): with ``resume`` the run in it must
    have this configuration; with ``overwrite`` an earlier run's files are
    deleted; otherwise a folder that holds a run is refused, naming both
    flags.  Writes ``run.json``."""
    from .io import write_json
    folder = Path(folder)
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other: resume "
                         "continues the run in the folder, overwrite deletes"
                         " it")
    if overwrite:
        removed = clear_run(folder)
        if removed:
            log.warning("%s: deleted the earlier run's files (%s)", folder,
                        ", ".join(removed))
    elif resume:
        check_resumable(folder, record)
    else:
        found = earlier_run(folder)
        if found:
            raise RunFolderError(
                f"{folder} already holds {_state_words(folder)} "
                f"({', '.join(found)}); pass --resume to continue it, "
                "--overwrite to replace it (its files are deleted first), or"
                " choose another --out")
    write_json(dict(record), folder / RUN_FILE)


__all__ = ["RunLock", "RunFolderError", "ResumeError", "owner",
           "fingerprint", "check_owner", "prepare_folder", "clear_run",
           "earlier_run", "check_resumable", "check_folder", "make_folder",
           "RUN_FILE", "ERROR_FILE", "LOCK_FILE", "RUN_FILES"]

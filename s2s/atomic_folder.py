"""A folder that appears complete or not at all, even if the process is killed while writing it.

    with AtomicFolder(output_dir / "checkpoint-500") as folder:
        folder.writing("model.safetensors")      # named in the error if this write fails
        save_file(tensors, folder.path / "model.safetensors")

Everything is written into a hidden sibling ``.<name>.tmp-<pid>``. On a clean exit each file is fsynced,
``manifest.json`` (every file with its size and sha256) is written last, and the folder is renamed into place.
A crash at any moment therefore leaves the old folder, the new one, or a hidden leftover that the next
``AtomicFolder`` in the same parent removes (or, for a folder moved aside by a re-save that never finished,
puts back). A folder is complete exactly when its manifest is present and matches its files.

Re-writing an existing folder moves the old one aside (``.<name>.old-<pid>``) first and deletes it only once
the new one is in place. On an error or an interrupt the temporary folder is removed and the old folder is
restored; the exception goes on to the caller, which knows what the folder was for and how to explain it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "s2s-checkpoint"
MANIFEST_VERSION = 1

_HIDDEN_RE = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old|deleting)-(?P<pid>\d+)$")


# --------------------------------------------------------------------------------------------------- durability
def fsync_file(path: Path) -> None:
    """Flush one finished file to disk (a rename is only crash-safe once the data it points to is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as err:  # some file systems cannot fsync a directory; the data files are already durable
        if err.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: Path) -> dict:
    """``manifest.json`` listing every other file of ``directory`` (relative name, size, sha256), fsynced."""
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        name = path.relative_to(directory).as_posix()
        if name == MANIFEST_NAME:
            continue
        files[name] = {"size": path.stat().st_size, "sha256": file_sha256(path)}
    manifest = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "files": files}
    with open(directory / MANIFEST_NAME, "w", encoding="utf-8") as f:
        f.write(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    fsync_file(directory / MANIFEST_NAME)
    return manifest


# --------------------------------------------------------------------------------------------------- leftovers
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Leftover(NamedTuple):
    path: Path
    name: str  # the folder it was written for
    kind: str  # tmp: being written; old: moved aside by a re-write; deleting: a removal in progress
    pid: int  # the process that was writing it


def leftover_folders(parent: Path) -> list[Leftover]:
    """The hidden folders of unfinished writes in ``parent``."""
    if not parent.is_dir():
        return []
    found = []
    for entry in parent.iterdir():
        match = _HIDDEN_RE.match(entry.name)
        if match and entry.is_dir():
            found.append(Leftover(entry, match.group("name"), match.group("kind"), int(match.group("pid"))))
    return found


def clean_leftovers(parent: Path) -> None:
    """Remove the hidden folders of writes that died (their process is gone); put back a folder that was
    moved aside for a re-write that never finished."""
    for leftover in leftover_folders(parent):
        if leftover.pid != os.getpid() and _pid_alive(leftover.pid):
            continue  # another live process is writing (or the pid was reused): leave it alone
        original = parent / leftover.name
        if leftover.kind == "old" and not original.exists():
            logger.warning(
                "restoring %s, moved aside by an interrupted re-save, to %s", leftover.path, original
            )
            os.replace(leftover.path, original)
            continue
        logger.info("removing %s, left behind by an interrupted save", leftover.path)
        shutil.rmtree(leftover.path, ignore_errors=True)


def remove_folder(path: Path) -> None:
    """Delete ``path`` by renaming it to a hidden name first: a crash mid-delete never leaves a half-deleted
    folder under its real name (the leftover is removed by the next write)."""
    doomed = path.parent / f".{path.name}.deleting-{os.getpid()}"
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


# --------------------------------------------------------------------------------------------------- the protocol
class AtomicFolder:
    """Context manager: write into ``path`` inside the ``with`` block; the folder appears at ``destination``
    when the block ends cleanly (see the module docstring). ``current`` names what is being written, for the
    caller's error message; ``writing(name)`` sets it."""

    def __init__(self, destination: str | Path) -> None:
        self.destination = Path(destination)
        self.parent = self.destination.parent
        self.path = self.parent / f".{self.destination.name}.tmp-{os.getpid()}"
        self.current = "the output folder"
        self._aside: Path | None = None

    def writing(self, what: str) -> None:
        self.current = what

    def __enter__(self) -> AtomicFolder:
        try:
            self.parent.mkdir(parents=True, exist_ok=True)
            clean_leftovers(self.parent)
            if self.path.exists():
                shutil.rmtree(self.path)
            self.writing(str(self.path))
            self.path.mkdir()
        except BaseException:
            self._roll_back()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self._roll_back()
            return
        try:
            self._commit()
        except BaseException:
            self._roll_back()
            raise
        if self._aside is not None:
            shutil.rmtree(self._aside, ignore_errors=True)

    def _commit(self) -> None:
        for path in sorted(p for p in self.path.rglob("*") if p.is_file()):
            self.writing(path.name)
            fsync_file(path)
        self.writing(MANIFEST_NAME)
        write_manifest(self.path)
        fsync_dir(self.path)
        self.writing(f"the rename of {self.path.name} to {self.destination.name}")
        if self.destination.exists():
            self._aside = self.parent / f".{self.destination.name}.old-{os.getpid()}"
            os.replace(self.destination, self._aside)
        os.replace(self.path, self.destination)
        fsync_dir(self.parent)

    def _roll_back(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        if self._aside is not None and not self.destination.exists():
            os.replace(self._aside, self.destination)  # failed between the two renames: put the old one back

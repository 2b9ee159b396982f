"""Crash-safe checkpoint files: written whole or not at all, and verified when read.

A save writes every file of the checkpoint into a hidden temporary folder of the checkpoint
directory (``.partial-*``), moves that folder to its final name (``step-00000400``) with one
rename, and then publishes it by replacing ``config.json`` (written under a temporary name and
renamed over the old one) with a version that names the folder and records the size and SHA-256
of each of its files. Until that last rename the previous ``config.json`` names the previous
folder, which is left untouched, so a process killed at any moment of a save leaves the previous
checkpoint readable; the superseded folders are removed only after the new ``config.json`` is in
place. Every file is flushed to disk (``fsync``) before the rename that publishes it.

Reading checks each file against the recorded size and checksum before it is loaded, so a
truncated file, or one copied in from another checkpoint, is refused with its path named
(:class:`CheckpointError`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

CONFIG = "config.json"
MANIFEST = "checkpoint"  # the entry of config.json naming the folder and its files' checksums
_OWN_FOLDER = re.compile(r"^(\.partial-[0-9a-f]{12}|(step-\d{8}|weights)(-[0-9a-f]{6})?)$")
_OWN_TEMP_FILE = re.compile(r"^config\.json\.tmp-[0-9a-f]{12}$")


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupt or from another checkpoint."""


# --- writing ----------------------------------------------------------------------------------


def write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and flush it to the disk."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def rename(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst`` in one step (replacing a file at ``dst``) and flush the folder."""
    os.replace(src, dst)
    _fsync_folder(dst.parent)


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without folder descriptors
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, indent=2, sort_keys=True).encode()


def write_json_atomically(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON under a temporary name beside ``path``, then rename it to ``path``."""
    tmp = path.with_name(f"{path.name}.tmp-{uuid.uuid4().hex[:12]}")
    write_file(tmp, json_bytes(obj))
    rename(tmp, path)


def save_folder(directory: Path, label: str, files: dict[str, bytes], config: dict) -> Path:
    """Write ``files`` and ``config`` as a new checkpoint of ``directory`` and publish it.

    The folder (``directory/label``, or ``label-xxxxxx`` when that name is taken) also holds a
    copy of ``config`` without the manifest, so it can be loaded on its own. Returns the folder.
    """
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / f".partial-{uuid.uuid4().hex[:12]}"
    partial.mkdir()
    for name, data in files.items():
        write_file(partial / name, data)
    write_file(partial / CONFIG, json_bytes(config))
    final = _unused_name(directory, label)
    rename(partial, final)
    manifest = {
        "dir": final.name,
        "files": {
            name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for name, data in files.items()
        },
    }
    write_json_atomically(directory / CONFIG, {**config, MANIFEST: manifest})
    remove_superseded(directory, keep=final.name, legacy=tuple(files))
    return final


def _unused_name(directory: Path, label: str) -> Path:
    path = directory / label
    while path.exists():
        path = directory / f"{label}-{uuid.uuid4().hex[:6]}"
    return path


def remove_superseded(directory: Path, keep: str, legacy: tuple[str, ...] = ()) -> None:
    """Remove the folders of earlier saves and unfinished ones (by their own name patterns only),
    leftover temporary ``config.json`` files, and ``legacy`` files of the flat version-1 layout."""
    for entry in directory.iterdir():
        if entry.name == keep:
            continue
        if entry.is_dir() and _OWN_FOLDER.match(entry.name):
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.is_file() and (_OWN_TEMP_FILE.match(entry.name) or entry.name in legacy):
            entry.unlink(missing_ok=True)


# --- reading ----------------------------------------------------------------------------------


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; :class:`CheckpointError` naming the file when it is corrupt."""
    try:
        text = path.read_text()
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path} is not a text file ({e.reason}): the file is corrupt") from e
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(
            f"{path} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}): the file "
            f"is corrupt or truncated"
        ) from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a JSON {type(obj).__name__}, not an object")
    return obj


def checkpoint_file(directory: Path, config: dict[str, Any], name: str) -> Path:
    """The path of file ``name`` of the checkpoint described by ``config`` (read from
    ``directory``), checked against the size and checksum the manifest records.

    A config without a manifest (a version-1 checkpoint, or a ``step-*`` folder opened on its own)
    names the files beside it; those are only checked to exist.
    """
    manifest = config.get(MANIFEST)
    if manifest is None:
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"{path} is missing: the checkpoint in {directory} is incomplete")
        return path
    try:
        folder, record = manifest["dir"], manifest["files"][name]
        size, digest = int(record["bytes"]), str(record["sha256"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(
            f"{directory / CONFIG} does not record the file {name} ({type(e).__name__}: {e}); "
            f"the config is corrupt"
        ) from e
    path = directory / folder / name
    verify(path, size, digest)
    return path


def verify(path: Path, size: int, digest: str) -> None:
    """Raise :class:`CheckpointError` unless ``path`` has ``size`` bytes and SHA-256 ``digest``."""
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: the checkpoint is incomplete")
    actual = path.stat().st_size
    if actual != size:
        raise CheckpointError(
            f"{path} is truncated or was replaced: it has {actual} bytes, the checkpoint's "
            f"config.json records {size}"
        )
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != digest:
        raise CheckpointError(
            f"{path} does not match the checksum recorded in config.json: the file was changed "
            f"or mixed in from another checkpoint"
        )

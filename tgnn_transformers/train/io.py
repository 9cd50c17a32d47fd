"""Files that survive faults: every write is atomic (write, fsync, rename),
gets the normal file mode, and checkpoints carry a checksum that is verified
before anything is unpickled."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, List

import torch

#: First bytes of a checkpoint: a format tag, then the payload's SHA-256.
CHECKPOINT_MAGIC = b"TGNNCKP1"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, corrupt or from another run."""


def _umask() -> int:
    # os.umask can only be read by setting it, which would race with other
    # threads; Linux reports it in /proc.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600; results are ordinary files.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def save_checkpoint(state: Dict[str, Any], path: Path) -> None:
    """Writes ``state`` (tensors and plain Python values only, so that it
    loads with ``weights_only=True``) with a SHA-256 of its bytes."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    digest = hashlib.sha256(payload).hexdigest().encode()
    _atomic_write(path, lambda f: f.write(CHECKPOINT_MAGIC + digest +
                                          payload))


def load_checkpoint(path: Path) -> Dict[str, Any]:
    """Reads a checkpoint written by :func:`save_checkpoint`; raises
    :class:`CheckpointError` when it is truncated or corrupt, before
    unpickling anything."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") \
            from exc
    head = len(CHECKPOINT_MAGIC)
    if blob[:head] != CHECKPOINT_MAGIC:
        raise CheckpointError(f"{path} is not a tgnn_transformers checkpoint"
                              " (wrong header); delete it to start over")
    digest, payload = blob[head:head + 64], blob[head + 64:]
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt "
                              "(checksum mismatch); delete it to start that "
                              "run over")
    try:
        return torch.load(io.BytesIO(payload), map_location="cpu",
                          weights_only=True)
    except Exception as exc:  # a pickle torch's safe loader refuses
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else \
            type(exc).__name__
        raise CheckpointError(
            f"{path} holds objects that are not loaded safely ({first}); it "
            "was not written by tgnn_transformers: delete it, or start over "
            "with --overwrite") from None


def strict_json(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by ``None`` (JSON
    has no NaN); tuples become lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def write_json(obj: Any, path: Path) -> None:
    """Strict JSON (NaN written as ``null``), atomically."""
    text = json.dumps(strict_json(obj), indent=2, allow_nan=False,
                      default=str) + "\n"
    _atomic_write(path, lambda f: f.write(text.encode()))


def write_csv(rows: List[Dict[str, Any]], path: Path) -> None:
    fields: List[str] = []
    for row in rows:
        fields.extend(k for k in row if k not in fields)

    def write(f):
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
        f.write(buf.getvalue().encode())

    _atomic_write(path, write)

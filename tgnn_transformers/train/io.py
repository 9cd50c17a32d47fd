"""Atomic files: checkpoints and results never exist half-written."""
from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, List

import torch


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
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(state: Dict[str, Any], path: Path) -> None:
    _atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: Path) -> Dict[str, Any]:
    # Written by this package (model and optimizer states, RNG states,
    # history); nothing else is unpickled from it.
    return torch.load(path, map_location="cpu", weights_only=False)


def write_json(obj: Any, path: Path) -> None:
    text = json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n"
    _atomic_write(path, lambda f: f.write(text.encode()))


def write_csv(rows: List[Dict[str, Any]], path: Path) -> None:
    fields: List[str] = []
    for row in rows:
        fields.extend(k for k in row if k not in fields)

    def write(f):
        import io
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
        f.write(buf.getvalue().encode())

    _atomic_write(path, write)

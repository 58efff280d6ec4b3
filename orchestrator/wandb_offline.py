"""Read an offline W&B run (``run-<id>.wandb``) back: its config and logged history rows.

W&B no longer ships a Python reader for its transaction log, so this is a small
one for checks and debugging (``python -m orchestrator.wandb_offline DIR``).  The
file is W&B's LevelDB-style record log: a 7-byte header (``:W&B``, magic, version),
then 32 KiB blocks of records, each with a 7-byte header (crc32, length, type)
and a fragment of a serialized ``wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path
from typing import Any

HEADER = struct.Struct("<4sHB")
RECORD_HEADER = struct.Struct("<IHB")
BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _records(data: bytes) -> list[bytes]:
    ident, _magic, _version = HEADER.unpack_from(data, 0)
    if ident != b":W&B":
        raise ValueError("not a W&B transaction log")
    pos, out, pending = HEADER.size, [], b""
    while pos + RECORD_HEADER.size <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < RECORD_HEADER.size:  # block tail too short for a header: padding
            pos += left_in_block
            continue
        _crc, length, kind = RECORD_HEADER.unpack_from(data, pos)
        pos += RECORD_HEADER.size
        chunk = data[pos : pos + length]
        pos += length
        if kind == 0 and length == 0:  # zero padding up to the next block
            pos += BLOCK - pos % BLOCK if pos % BLOCK else 0
            continue
        if kind == FULL:
            out.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            out.append(pending + chunk)
            pending = b""
    return out


def read_run(path: Path | str) -> dict[str, Any]:
    """{"config": {key: value}, "history": [row dicts], "summary": {...}, "run": {...}} of one offline run.

    ``path`` is the ``.wandb`` file or its ``offline-run-*`` directory.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    path = Path(path)
    if path.is_dir():
        path = next(path.glob("*.wandb"))
    result: dict[str, Any] = {"config": {}, "history": [], "summary": {}, "run": {}}
    for raw in _records(path.read_bytes()):
        # wandb's generated protobuf modules build their message classes at import time: no static names.
        record = pb.Record()  # type: ignore[attr-defined]
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "history":
            row = {}
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                row[key] = json.loads(item.value_json)
            result["history"].append(row)
        elif kind == "config":
            for item in record.config.update:
                result["config"][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif kind == "summary":
            for item in record.summary.update:
                result["summary"][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif kind == "run":
            run = record.run
            result["run"] = {
                "run_id": run.run_id,
                "project": run.project,
                "entity": run.entity,
                "group": run.run_group,
                "job_type": run.job_type,
                "tags": list(run.tags),
                "display_name": run.display_name,
            }
            for item in run.config.update:
                result["config"][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    # W&B stores config values as {"value": v} (plus internal "_wandb" bookkeeping)
    result["config"] = {
        k: (v.get("value") if isinstance(v, dict) and "value" in v else v)
        for k, v in result["config"].items()
        if k != "_wandb"
    }
    return result


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    for arg in args:
        run = read_run(arg)
        print(
            json.dumps(
                {
                    "run": run["run"],
                    "rows": len(run["history"]),
                    "config_keys": sorted(run["config"]),
                    "last_row": run["history"][-1] if run["history"] else None,
                },
                indent=2,
                default=str,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

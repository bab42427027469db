#!/usr/bin/env python3
"""Check an audit export offline: no database, no service; Python 3.11+ and ``cryptography``.

Usage::

    python docs/audit_verify_export.py EXPORT.json [--vkey VERIFIER_KEY ...]

``EXPORT.json`` is the output of ``flask --app app audit export <reference> --out EXPORT.json``.
For every audit row marked sealed, the script rebuilds the row's leaf from the
row's own fields (it does not trust the ``leaf`` copy), hashes it as an RFC 9162
leaf (``SHA-256(0x00 || leaf)``), and checks its inclusion proof against the root
of the export's checkpoint (RFC 9162 section 2.1.3.2). It then checks the
checkpoint, a C2SP signed note (https://c2sp.org/signed-note), has a valid
Ed25519 signature by a trusted key. Pass the log's verifier keys with ``--vkey``
(``flask --app app audit public-keys`` prints them as ``vkey``; get them from the
operator out of band): without ``--vkey`` the keys inside the export are used,
which proves the export is self-consistent but not who signed it.

Prints one line per problem and exits 1, or prints a summary and exits 0.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

LEAF_FORMAT = "erx-audit-leaf/1"  # app/mechanisms/audit.py leaf_data
LIST_LEAF_FORMAT = "erx-audit-leaf/2"  # a row naming several prescriptions (a list read)


def quote(value: str | None) -> str:
    """PostgreSQL's quote_nullable(): NULL, or '...' with ' doubled (E'...' and \\ doubled
    when the value holds a backslash)."""
    if value is None:
        return "NULL"
    quoted = value.replace("'", "''")
    if "\\" in value:
        return "E'" + quoted.replace("\\", "\\\\") + "'"
    return "'" + quoted + "'"


def leaf_bytes(row: dict) -> bytes:
    """The leaf of one audit row, exactly as the service builds it (app/mechanisms/audit.py leaf_data)."""
    when = row["occurred_at"].rstrip("Z").replace("T", " ")  # 2026-12-01T09:30:00.120000Z
    if "." in when:
        when = when.rstrip("0").rstrip(".")  # -> 2026-12-01 09:30:00.12
    pid = row["prescription_id"]
    listed = row.get("prescription_ids")
    fields = [
        LEAF_FORMAT if listed is None else LIST_LEAF_FORMAT,
        str(row["id"]),
        quote(row["actor"]),
        quote(row["role"]),
        quote(row["action"]),
        "NULL" if pid is None else str(pid),
        when,
        quote(row["request_id"]),
        quote(row["client_addr"]),
    ]
    if listed is not None:  # as PostgreSQL quotes a bigint[]: '{1,2,3}'
        fields.append("'{" + ",".join(str(int(i)) for i in listed) + "}'")
    return ",".join(fields).encode("utf-8")


def node(left: bytes, right: bytes) -> bytes:
    """RFC 9162 2.1.1 interior node."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def verify_inclusion(index: int, size: int, leaf: bytes, proof: list[bytes], root: bytes) -> bool:
    """RFC 9162 section 2.1.3.2, step by step."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node(p, r)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def parse_vkey(vkey: str) -> tuple[str, bytes, bytes]:
    """``name+hexid+base64(0x01||key)`` -> (name, 4-byte id, 32-byte Ed25519 public key)."""
    name, key_id, blob = vkey.split("+", 2)  # base64 may contain "+" too
    raw = base64.b64decode(blob)
    if raw[:1] != b"\x01" or len(raw) != 33:
        raise ValueError("not an Ed25519 verifier key")
    expected = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    if bytes.fromhex(key_id) != expected:
        raise ValueError("verifier key id does not match its key")
    return name, expected, raw[1:]


def verify_note(note: str, keys: list[tuple[str, bytes, bytes]]) -> tuple[int, bytes] | None:
    """(size, root) of a checkpoint note signed by one of ``keys``, else None."""
    text, sep, sigs = note.rpartition("\n\n")
    if not sep:
        return None
    text += "\n"
    lines = text.split("\n")
    size, root = int(lines[1]), base64.b64decode(lines[2])
    for line in sigs.splitlines():
        if not line.startswith("\u2014 "):
            continue
        name, blob = line[2:].rsplit(" ", 1)
        raw = base64.b64decode(blob)
        for key_name, key_id, public in keys:
            if key_name == name and raw[:4] == key_id:
                try:
                    Ed25519PublicKey.from_public_bytes(public).verify(raw[4:], text.encode())
                except InvalidSignature:
                    continue
                return size, root
    return None


def check(export: dict, vkeys: list[str]) -> tuple[list[str], int]:
    """Return (problems, sealed rows checked) for a parsed export."""
    problems: list[str] = []
    keys = [parse_vkey(v) for v in (vkeys or [k["vkey"] for k in export.get("public_keys", [])])]
    checkpoint = export.get("checkpoint")
    rows = export.get("audit_events", [])
    if checkpoint is None:
        return ["the export has no checkpoint: nothing is sealed yet"], 0
    signed = verify_note(checkpoint["note"], keys)
    if signed is None:
        return [f"checkpoint {checkpoint['id']}: signature does not verify with the given keys"], 0
    size, root = signed
    checked = 0
    for row in rows:
        mine = export["prescription"]["id"]
        if row.get("prescription_id") != mine and mine not in (row.get("prescription_ids") or []):
            problems.append(f"audit row {row['id']}: belongs to another prescription")
        if not row.get("sealed"):
            continue
        leaf = hashlib.sha256(b"\x00" + leaf_bytes(row)).digest()
        proof = [bytes.fromhex(h) for h in row["inclusion_proof"]]
        if not verify_inclusion(row["leaf"]["index"], size, leaf, proof, root):
            problems.append(
                f"audit row {row['id']}: not included in checkpoint {checkpoint['id']} as exported"
            )
        checked += 1
    return problems, checked


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", help="the JSON file written by `flask --app app audit export`")
    parser.add_argument(
        "--vkey", action="append", default=[], help="a trusted verifier key (repeatable)"
    )
    args = parser.parse_args(argv)
    try:
        with open(args.export, encoding="utf-8") as fh:
            export = json.load(fh)
        problems, checked = check(export, args.vkey)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"audit export unreadable: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    for line in problems:
        print(f"audit export: {line}", file=sys.stderr)
    if problems:
        return 1
    unsealed = sum(1 for r in export["audit_events"] if not r.get("sealed"))
    print(
        f"audit export ok: prescription {export['prescription']['id']}, "
        f"{checked} sealed rows proven against checkpoint {export['checkpoint']['id']} "
        f"(size {export['checkpoint']['tree_size']}), "
        f"{unsealed} not yet sealed"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

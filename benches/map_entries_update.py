#!/usr/bin/env python3
"""Writes one Yjs v1 update that sets N entries of the root map `m` (`{prefix}{i}` -> true)
from one client, encoded by hand (no Yjs library needed). Used for the decoded-size figures in
RESULTS.md: POST it to /api/v1/docs/NAME/update and read the relay's RSS.

usage: map_entries_update.py N FILE [CLIENT [PREFIX]]
"""
import sys


def varuint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def varstr(s):
    b = s.encode()
    return varuint(len(b)) + b


def update(n, client=1, prefix="k"):
    # One client: n blocks from clock 0.
    parts = [varuint(1), varuint(n), varuint(client), varuint(0)]
    root = varstr("m")
    for i in range(n):
        # Info 0x28: a map entry (parent sub) with `Any` content and no origins; the parent
        # is the root type named "m"; one value, `true` (tag 120).
        parts.append(b"\x28" + varuint(1) + root + varstr(f"{prefix}{i}") + varuint(1) + b"\x78")
    parts.append(varuint(0))  # empty delete set
    return b"".join(parts)


if __name__ == "__main__":
    n, out = int(sys.argv[1]), sys.argv[2]
    client = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    prefix = sys.argv[4] if len(sys.argv) > 4 else "k"
    with open(out, "wb") as f:
        f.write(update(n, client, prefix))

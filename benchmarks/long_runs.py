"""What one small update costs the server's document (pycrdt, Yrs) when it extends a long run of
text: one client's consecutive insertions, which Yrs merges into a single string item.

    python -m benchmarks.long_runs                  # runs of 0, 250,000, 1,000,000 and 4,000,000 characters
    python -m benchmarks.long_runs --runs 0,100000 --appends 500

For each run length, a fresh document gets the run in one update, then one-character appends chained
after it (each a Yjs v1 update as a client sends it), applied with ``Doc.apply_update`` as a room
applies them. Reported: the median time per append over blocks of appends, and its ratio to the
first run length given (by default 0: appends to a run they build themselves, the baseline measured
in the same run). Yrs measures the merged item's UTF-16 length again at every merge (its
``Item::try_squash``), so the cost grows with the run: this is why the server counts the time each
message costs against the client (``RATE_LIMIT_SYNC_TIME_MS``) and not only its messages and bytes.

Then what one update costs when it splits such a run many times (``--splits`` one-character
insertions or deletions, another client's, spread over the last part of the run, written as Yjs
writes them): Yrs finds the offset in the long item by walking it, so each split costs time in
proportion to the run too; and what an item costs that Yjs places among as many concurrent
items (``walk``: the run's length in one-character items of as many clients, all at the start
of the text, and items of clients with higher ids placed there too). Reported per struct, per
unit of the run's clock (a UTF-16 code unit) or per item walked, and against the bound the
server applies a client's update in parts by (``server.room.struct_costs``): the measured cost
must stay under it. And the same update applied in parts as a room does (``UpdateParts``, parts
of ``PART_SECONDS`` by the bound): its total time against applying it whole, and its longest part.
"""

from __future__ import annotations

import argparse
import statistics
import time

from pycrdt import Doc, Text, write_var_uint

from server.room import PART_SECONDS, struct_costs
from server.yjs_format import UpdateParts

RUNS = [0, 250_000, 1_000_000, 4_000_000]
SPLIT_RUNS = [250_000, 1_000_000, 4_000_000]
WALK_ITEMS = [2_000, 10_000]
STRING = 4  # Yjs content ref of a string
ORIGIN, RIGHT_ORIGIN = 0x80, 0x40


def append_updates(doc: Doc, text: Text, count: int) -> list[bytes]:
    """``count`` one-character appends to ``text``, made on ``doc`` (a writer's copy) and returned
    as the updates a client would send."""
    updates = []
    for _ in range(count):
        before = doc.get_state()
        text += "b"
        updates.append(doc.get_update(before))
    return updates


def per_append(run: int, char: str, appends: int, blocks: int) -> float:
    """Median seconds per append to a run of ``run`` copies of ``char``."""
    writer = Doc()
    text = writer.get("text", type=Text)
    if run:
        text += char * run
    initial = writer.get_update()
    updates = append_updates(writer, text, appends * blocks)
    server = Doc()
    server.apply_update(initial)
    timings = []
    for block in range(blocks):
        started = time.perf_counter()
        for update in updates[block * appends : (block + 1) * appends]:
            server.apply_update(update)
        timings.append((time.perf_counter() - started) / appends)
    return statistics.median(timings)


def splitting_update(run_clock: int, splits: int, kind: str) -> bytes:
    """An update from client 2 splitting client 1's run (clocks 0 .. ``run_clock - 1``) at
    ``splits`` points three units apart back from its end: one-character insertions (items whose
    origin and right origin are neighbouring units of the run) or deletions of one unit."""
    points = [run_clock - 3 * i - 2 for i in range(splits)]
    if kind == "deletions":
        # from the end back, unlike Yjs (which writes them in order of clock): each is then a split
        ranges = b"".join(write_var_uint(clock) + write_var_uint(1) for clock in points)
        return b"\x00\x01" + write_var_uint(1) + write_var_uint(splits) + ranges
    items = b"".join(
        bytes([STRING | ORIGIN | RIGHT_ORIGIN])
        + write_var_uint(1)
        + write_var_uint(clock)  # origin: the unit before the insertion
        + write_var_uint(1)
        + write_var_uint(clock + 1)  # right origin: the unit after it
        + write_var_uint(1)
        + b"x"
        for clock in points
    )
    return b"\x01" + write_var_uint(splits) + write_var_uint(2) + b"\x00" + items + b"\x00"


def at_the_start(clients: range) -> bytes:
    """One-character items of ``clients``, one each, all at the start of the text "text" (no
    origin): concurrent, so Yjs orders each among the others."""
    sections = b"".join(
        write_var_uint(1) + write_var_uint(client) + b"\x00" + bytes([STRING]) + b"\x01\x04text\x01x"
        for client in clients
    )
    return write_var_uint(len(clients)) + sections + b"\x00"


def run_document(run: int, char: str) -> tuple[bytes, int]:
    """One client's run of ``run`` copies of ``char`` as an update; and its clock."""
    writer = Doc(client_id=1)
    writer.get("text", type=Text).insert(0, char * run)
    return writer.get_update(), run * len(char.encode("utf-16-le")) // 2


def applied(initial: bytes, update: bytes, units: int, repeats: int) -> tuple[float, float, float]:
    """Median seconds to apply ``update`` to a document holding ``initial`` whole; median seconds
    to apply it in parts as a room does; the longest part."""
    costs = struct_costs(units)
    whole, in_parts, longest = [], [], 0.0
    for _ in range(repeats):
        server = Doc()
        server.apply_update(initial)
        started = time.perf_counter()
        server.apply_update(update)
        whole.append(time.perf_counter() - started)
        server = Doc()
        server.apply_update(initial)
        parts = UpdateParts(update)
        total = 0.0
        while parts.left:
            part = parts.take(PART_SECONDS, costs)
            started = time.perf_counter()
            server.apply_update(part)
            took = time.perf_counter() - started
            total += took
            longest = max(longest, took)
        in_parts.append(total)
    return statistics.median(whole), statistics.median(in_parts), longest


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--runs", default=",".join(map(str, RUNS)), help="run lengths, in characters")
    parser.add_argument("--appends", type=int, default=200, help="appends per timed block")
    parser.add_argument("--blocks", type=int, default=5, help="timed blocks per run length (median)")
    parser.add_argument("--split-runs", default=",".join(map(str, SPLIT_RUNS)), help="run lengths to split")
    parser.add_argument("--splits", type=int, default=200, help="splits in the one update")
    parser.add_argument("--repeats", type=int, default=3, help="times each update is applied (median)")
    args = parser.parse_args()
    runs = [int(x) for x in args.runs.split(",")]
    print("| run (characters) | text | per append (median) | vs the first run |")
    print("| --- | --- | --- | --- |")
    for char, label in (("a", "ASCII"), ("文", "CJK")):
        baseline = None
        for run in runs:
            cost = per_append(run, char, args.appends, args.blocks)
            baseline = baseline or cost
            print(f"| {run:,} | {label} | {cost * 1e6:,.1f} us | {cost / baseline:.1f}x |")
    print()
    print(
        f"One update of {args.splits:,} structs: per struct applied whole (median of {args.repeats}), per "
        "unit of the run's clock or item walked, against the server's bound; the update in parts as a room "
        f"applies it: total against whole, and the longest part (parts of {PART_SECONDS * 1000:g} ms "
        "by the bound)"
    )
    print()
    print(
        "| run | text | structs | per struct | per unit or item | of the bound | in parts / whole "
        "| longest part |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    rows = [
        (run, char, label, kind)
        for char, label in (("a", "ASCII"), ("文", "CJK"), ("\U0001f600", "emoji"))
        for run in (int(x) for x in args.split_runs.split(","))
        for kind in ("insertions", "deletions")
    ] + [(items, "", "one-character items", "walk") for items in WALK_ITEMS]
    for run, char, label, kind in rows:
        if kind == "walk":
            initial, units = at_the_start(range(1_000, 1_000 + run)), run
            update = at_the_start(range(2**31, 2**31 + args.splits))
            bound = struct_costs(units).walk
        else:
            initial, units = run_document(run, char)
            update = splitting_update(units, args.splits, kind)
            costs = struct_costs(units)
            bound = costs.walk if kind == "insertions" else costs.deletion(1)  # one-character ranges
        whole, in_parts, longest = applied(initial, update, units, args.repeats)
        each = whole / args.splits
        print(
            f"| {run:,} | {label} | {kind} | {each * 1e3:,.3f} ms | {each / units * 1e9:.2f} ns "
            f"| {each / bound:.0%} | {in_parts / whole:.2f}x | {longest * 1e3:.2f} ms |"
        )


if __name__ == "__main__":
    main()

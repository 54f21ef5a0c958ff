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
proportion to the run too. Reported per split, per unit of the run's clock (a UTF-16 code unit),
and against the bound the server applies a client's update in parts by (``server.room.part_size``:
``STRUCT_SECONDS`` plus ``CLOCK_SECONDS`` per unit of the highest client clock): the measured cost
must stay under it. And the same update applied in parts of ``part_size`` structs, as a room does:
its total time against applying it whole, and its longest part against ``PART_SECONDS``.
"""

from __future__ import annotations

import argparse
import statistics
import time

from pycrdt import Doc, Text, write_var_uint

from server.room import CLOCK_SECONDS, PART_SECONDS, STRUCT_SECONDS, part_size
from server.yjs_format import split_update

RUNS = [0, 250_000, 1_000_000, 4_000_000]
SPLIT_RUNS = [250_000, 1_000_000, 4_000_000]
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


def run_document(run: int, char: str) -> tuple[Doc, int]:
    """A document holding one client's run of ``run`` copies of ``char``; and its clock."""
    writer = Doc(client_id=1)
    writer.get("text", type=Text).insert(0, char * run)
    clock = run * len(char.encode("utf-16-le")) // 2
    return writer, clock


def per_split(run: int, char: str, splits: int, kind: str, repeats: int) -> tuple[float, float, float]:
    """Median seconds per split of a run of ``run`` copies of ``char``, applied whole; median
    seconds for the same update applied in parts of ``part_size``; the longest part."""
    writer, clock = run_document(run, char)
    initial = writer.get_update()
    update = splitting_update(clock, splits, kind)
    parts = split_update(update, part_size(clock))
    whole, in_parts, longest = [], [], 0.0
    for _ in range(repeats):
        server = Doc()
        server.apply_update(initial)
        started = time.perf_counter()
        server.apply_update(update)
        whole.append((time.perf_counter() - started) / splits)
        server = Doc()
        server.apply_update(initial)
        total = 0.0
        for part in parts:
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
        f"One update of {args.splits:,} splits: per split applied whole (median of {args.repeats}), per "
        "unit of the run's clock, against the bound; the update in parts of `part_size` structs: total "
        f"against whole, and the longest part (bound: {PART_SECONDS * 1000:g} ms)"
    )
    print()
    print(
        "| run (characters) | text | splits | per split | per clock unit | of the bound | parts "
        "| in parts / whole | longest part |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for char, label in (("a", "ASCII"), ("文", "CJK"), ("\U0001f600", "emoji")):
        for run in (int(x) for x in args.split_runs.split(",")):
            _, clock = run_document(run, char)
            for kind in ("insertions", "deletions"):
                cost, in_parts, longest = per_split(run, char, args.splits, kind, args.repeats)
                bound = STRUCT_SECONDS + clock * CLOCK_SECONDS
                print(
                    f"| {run:,} | {label} | {kind} | {cost * 1e3:,.3f} ms | {cost / clock * 1e9:.2f} ns "
                    f"| {cost / bound:.0%} | {part_size(clock)} struct(s) "
                    f"| {in_parts / (cost * args.splits):.2f}x "
                    f"| {longest * 1e3:.2f} ms |"
                )


if __name__ == "__main__":
    main()

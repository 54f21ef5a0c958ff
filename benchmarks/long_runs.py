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
"""

from __future__ import annotations

import argparse
import statistics
import time

from pycrdt import Doc, Text

RUNS = [0, 250_000, 1_000_000, 4_000_000]


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


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--runs", default=",".join(map(str, RUNS)), help="run lengths, in characters")
    parser.add_argument("--appends", type=int, default=200, help="appends per timed block")
    parser.add_argument("--blocks", type=int, default=5, help="timed blocks per run length (median)")
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


if __name__ == "__main__":
    main()

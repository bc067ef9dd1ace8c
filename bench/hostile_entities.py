"""The issue's hostile entity case: a 15 MB one-line text of back-to-back emails, phones,
dates and amounts, through the entity finder the way the ``entities`` stage runs it.

Each mode runs in a child process of its own, so its peak RSS (``ru_maxrss``) is its own:

before:    the finder as it was: every match of the whole page at once, overlaps removed
           by the bisect-and-insert list (quadratic), no cap. Stopped after
           ``--before-timeout`` seconds (default 900) and reported as "> timeout".
after:     ``find_entities_by_window`` over the whole page with no cap: the linear
           overlap removal, 64 K windows (what a cap-free stage would cost).
after_cap: what the stage does per page: windows until ``ENTITIES_MAX_PER_PAGE``
           (default 5,000) entities are kept.

Only the finder: no database writes (which the cap bounds to 5,000 rows a page).

    .venv/bin/python bench/hostile_entities.py [--megabytes 15] [--before-timeout 900]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import _setup

NAME = "hostile_entities"
LINE = "a{n}@x.example (402) 555-{n:04d} 2021-01-{d:02d} $1{n},00 "


def hostile_text(megabytes: float) -> str:
    """One line of back-to-back emails, phones, dates and amounts, about ``megabytes`` MB."""
    parts, size, n = [], 0, 0
    while size < megabytes * 1_000_000:
        part = LINE.format(n=n % 10000, d=n % 28 + 1)
        parts.append(part)
        size += len(part)
        n += 1
    return "".join(parts)


def quadratic_without_overlaps(candidates: list) -> list:
    """The overlap removal before this change (kept here and in tests/test_entities.py)."""
    import bisect

    from processing.pipeline.entity_finder import _PRECEDENCE

    ordered = sorted(candidates, key=lambda f: (-(f.end - f.start), _PRECEDENCE[f.kind], f.start))
    starts: list[int] = []
    kept: list = []
    for found in ordered:
        i = bisect.bisect_right(starts, found.start)
        if i > 0 and kept[i - 1].end > found.start:
            continue
        if i < len(kept) and kept[i].start < found.end:
            continue
        starts.insert(i, found.start)
        kept.insert(i, found)
    return kept


def child(mode: str, megabytes: float, cap: int) -> None:
    """Run one mode and print its figures as JSON."""
    _setup.django_setup()
    from processing.pipeline import entity_finder

    text = hostile_text(megabytes)
    start = time.perf_counter()
    if mode == "before":
        entity_finder._without_overlaps = quadratic_without_overlaps
        kept = len(entity_finder.find_entities(text))
    else:
        kept = 0
        for window in entity_finder.find_entities_by_window(text):
            kept += len(window)
            if mode == "after_cap" and kept >= cap:
                kept = cap
                break
    seconds = time.perf_counter() - start
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mode": mode, "seconds": seconds, "peak_rss_mb": rss_mb, "entities": kept}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--megabytes", type=float, default=15)
    parser.add_argument("--before-timeout", type=float, default=900)
    parser.add_argument("--cap", type=int, default=5000)
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.megabytes, args.cap)
        return
    info = _setup.prepare()
    rows, results = [], {}
    for mode in ("after_cap", "after", "before"):
        command = [sys.executable, __file__, "--child", mode, "--megabytes", str(args.megabytes)]
        command += ["--cap", str(args.cap)]
        timeout = args.before_timeout if mode == "before" else None
        try:
            out = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout, env=os.environ, check=True
            ).stdout
            figures = json.loads(out.strip().splitlines()[-1])
        except subprocess.TimeoutExpired:
            figures = {"mode": mode, "seconds": f"> {timeout:g}", "peak_rss_mb": None}
        results[mode] = figures
        rows.append([mode, figures["seconds"], figures["peak_rss_mb"], figures.get("entities")])
        print(f"{mode}: {figures}", flush=True)
    print(_setup.table(["mode", "seconds", "peak RSS MB", "entities"], rows))
    _setup.write_results(NAME, {"versions": info, "megabytes": args.megabytes, **results})


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Loading a folder dataset: the first load (parallel decode, cache written) and the second (from the cache).

Also the single-process decode the loader replaced, for reference. On the real CIFAR-10 copy:
  python bench/bench_folder_load.py --data-dir /tmp/cifar10-jpeg
Each load is timed in a fresh process (imports included, as a run pays them), with a new, empty
cache folder for the first load.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

LOAD = """
import sys, time
sys.path.insert(0, {repo!r})
t = time.perf_counter()
from data.datasets import load_dataset
data = load_dataset("folder", {data_dir!r}, cache_dir={cache!r}, use_cache={use_cache})
print(time.perf_counter() - t, len(data.train_y) + len(data.test_y))
"""

SERIAL = """
import sys, time
sys.path.insert(0, {repo!r})
t = time.perf_counter()
from pathlib import Path
from data.folder import decode_images, list_image_folder
n = 0
for split in ("train", "test"):
    samples, _ = list_image_folder(Path({data_dir!r}) / split)
    images, problems = decode_images([p for p, _ in samples], resize=False)
    n += len(images)
print(time.perf_counter() - t, n)
"""


def timed(code: str) -> tuple[float, int]:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), int(out[1])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="a folder dataset: DIR/train/<class>/*, DIR/test/<class>/*")
    p.add_argument("--repeats", type=int, default=3, help="times each load is measured (the median is reported)")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    results = {"first": [], "second": [], "one_process_no_cache": []}
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as cache:
            fmt = dict(repo=str(REPO), data_dir=args.data_dir, cache=cache)
            first, n = timed(LOAD.format(use_cache=True, **fmt))
            second, _ = timed(LOAD.format(use_cache=True, **fmt))
        serial, _ = timed(SERIAL.format(**fmt))
        results["first"].append(first)
        results["second"].append(second)
        results["one_process_no_cache"].append(serial)
    report = {k: sorted(v)[len(v) // 2] for k, v in results.items()}
    report.update(images=n, cores=os.cpu_count(), runs=results, date=time.strftime("%Y-%m-%d"))
    print(f"{n} images, {os.cpu_count()} cores, median of {args.repeats}: first load {report['first']:.1f} s "
          f"(parallel decode + cache write), second {report['second']:.1f} s (cache), one process without "
          f"cache {report['one_process_no_cache']:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Screenshot a run's report.html for the README, with the dataset's own images left out.

  python docs/screenshot_report.py RUN_DIR docs/report.png

The misclassified-image and Grad-CAM grids show CIFAR-10 test images, which this repository must not
hold. The screenshot is taken of a copy of the page in which each such grid is a grey box that says so.
Everything else (numbers, plots, tables) is the page as the run wrote it. Needs headless Chromium.
The PNG is reduced to 256 colours to keep the repository small.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DATASET_IMAGES = re.compile(r'<img src="[^"]*" alt="((?:misclassified test images|Grad-CAM of misclassified)[^"]*)">')
PLACEHOLDER = ('<div style="background:#e5e7eb;color:#374151;padding:24px;border-radius:6px;max-width:560px">'
               "[{alt}: dataset images, left out of this screenshot]</div>")


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def screenshot(chromium: str, page: Path, png: Path, width: int = 1200, height: int = 4500) -> None:
    """Render `page` in headless Chromium (a throwaway profile, nothing fetched from the network) into `png`."""
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", "--hide-scrollbars", f"--screenshot={png}",
                        f"--window-size={width},{height}", page.resolve().as_uri()],
                       capture_output=True, timeout=120)  # its exit status varies; the PNG is what counts


def redact(html: str) -> tuple[str, int]:
    """The page with every dataset-image grid replaced by a placeholder box; and how many were replaced."""
    return DATASET_IMAGES.subn(lambda m: PLACEHOLDER.format(alt=m.group(1)), html)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("png", type=Path)
    p.add_argument("--width", type=int, default=1200)
    p.add_argument("--height", type=int, default=4500)
    args = p.parse_args(argv)
    chromium = find_chromium()
    page = args.run_dir / "report.html"
    if chromium is None or not page.is_file():
        print(f"error: {'no chromium on PATH' if chromium is None else f'no report.html in {args.run_dir}'}",
              file=sys.stderr)
        return 2
    html, count = redact(page.read_text())
    copy = args.run_dir / ".report.redacted.html"  # beside the original, so the page's relative links resolve
    copy.write_text(html)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            shot = Path(tmp) / "shot.png"
            screenshot(chromium, copy, shot, args.width, args.height)
            from PIL import Image

            Image.open(shot).convert("RGB").quantize(colors=256).save(args.png, optimize=True)
    finally:
        copy.unlink(missing_ok=True)
    print(f"{args.png}: {count} dataset-image grid(s) left out")
    return 0


if __name__ == "__main__":
    sys.exit(main())

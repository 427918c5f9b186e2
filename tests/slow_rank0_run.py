"""run.py with rank 0 starting 5 s late: makes certain the torchrun race of a bad flag (tests/test_distributed.py).

Every rank parses the same flags and only rank 0 prints the error. A rank other than 0 that left at once
used to get rank 0 stopped by torchrun before rank 0 had written its line.
"""
import os
import runpy
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

if os.environ.get("RANK") == "0":
    time.sleep(5)
sys.path.insert(0, str(ROOT))
sys.argv[0] = str(ROOT / "run.py")
runpy.run_path(str(ROOT / "run.py"), run_name="__main__")

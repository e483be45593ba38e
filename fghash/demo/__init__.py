"""``fghash demo``: the whole chain on the embedded synthetic birds, no download.

:mod:`fghash.demo.learn` makes the data, the training run and the codes file;
:mod:`fghash.demo.chain` adds the index, the searches and the mAP and speed report.
"""

from fghash.demo.chain import DemoReport, demo
from fghash.demo.learn import DEMO_FILE, DemoConfig, DemoResult, run_demo

__all__ = ["DEMO_FILE", "DemoConfig", "DemoReport", "DemoResult", "demo", "run_demo"]

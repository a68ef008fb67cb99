"""matplotlib's pyplot, headless (Agg) and imported on first use.

Plotting is for reports (eval plots, results.png); the modules that hold a task's plots also
draw overlays and previews with OpenCV, on the demo, predict and training paths, which need not
pay matplotlib's import (about half a second).
"""
from __future__ import annotations


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt

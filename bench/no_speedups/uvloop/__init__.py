"""Hides the installed uvloop from uvicorn's auto-detection: plain rows run without it."""

raise ImportError("uvloop is hidden by bench/no_speedups (a row without speedups)")

"""Hides the installed httptools from uvicorn's auto-detection: plain rows run without it."""

raise ImportError("httptools is hidden by bench/no_speedups (a row without speedups)")

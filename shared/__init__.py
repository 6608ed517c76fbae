"""event-relay's shared package: every event function imports its behaviour from here."""

import gc

# A function's start (imports, pydantic's schema builds) makes some 50,000 objects that live as
# long as the process and ~100 that are garbage. At the default thresholds the collector walked
# them 46 times during it (one full pass), ~25 ms of a ~0.3 s cold start; at 10,000, 3 passes,
# ~4.5 ms. At 100,000 it makes none: set before anything else of a function is imported, and
# lowered to the requests' 10,000 once the start's objects are frozen (shared.function). Other
# processes importing the package (tools, tests) keep 100,000.
gc.set_threshold(100_000, 20, 10)

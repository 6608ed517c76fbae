"""event-relay's shared package: every event function imports its behaviour from here."""

import gc

# A function's start (imports, pydantic's schema builds) makes tens of thousands of objects that
# live as long as the process. At the default thresholds the collector walked them 46 times
# during it (one full pass), ~25 ms of a ~0.37 s cold start; at a tenth as often, 4 passes and
# ~5 ms. Set before anything else is imported; requests want the same (shared.function).
gc.set_threshold(10_000, 20, 10)

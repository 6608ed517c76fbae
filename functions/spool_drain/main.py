"""spool_drain: republishes to the broker what the spool held while it could not confirm."""

from shared.function import drain_function

spool_drain = drain_function()

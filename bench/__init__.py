"""`nox -s bench`: event-relay measured side by side with the alternatives (see bench/README.md)."""

"""The designs event-relay is measured against (benchmark only, never deployed)."""

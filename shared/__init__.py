"""event-relay's shared package: every event function imports its behaviour from here."""

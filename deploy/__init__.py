"""Local deployment helpers: a private RabbitMQ node for tests and `nox -s dev`."""

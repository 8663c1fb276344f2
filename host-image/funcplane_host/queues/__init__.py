"""Queue triggers and queue output bindings on Azure Queue Storage."""

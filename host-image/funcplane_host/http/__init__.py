"""The HTTP front door: triggers under the route prefix, admin API, health, metrics."""

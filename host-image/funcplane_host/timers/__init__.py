"""Timer triggers: schedules and the scheduler."""

"""Static and dynamic concurrency of function invocations (see manager.py and runtime.py)."""

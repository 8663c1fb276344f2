"""Loading an app: host.json, function.json folders (host indexing), the catalog and its HTTP routes."""

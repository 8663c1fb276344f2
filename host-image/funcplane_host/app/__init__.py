"""Loading an app: host.json, function.json folders (host indexing), worker-reported metadata."""

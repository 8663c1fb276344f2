"""Kubernetes client plumbing below the reconcilers and the swap engine: the REST façade
(`client`), the watched object store (`store`), the coalescing work queue (`workqueue`) and the
one status writer (`status`). Nothing here imports `controllers` or `swap`."""

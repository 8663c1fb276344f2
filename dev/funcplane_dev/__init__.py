"""Development tools, never part of the product or its images: the local control plane with kwok
nodes, its PKI, binaries and pod runner, the local environment, the image builds and the demo.

Installed by the editable install of a source checkout (`make venv`); `funcplane dev ...` and
`funcplane demo` hand their command line to `funcplane_dev.cli`.
"""

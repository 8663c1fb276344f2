#!/bin/sh
# Install the function host into a virtualenv and the default workers into a directory.
# The Dockerfile runs exactly this script; tests/host/test_host_install.py runs it into a temp dir.
#
#   install.sh --source REPO_DIR --venv VENV_DIR --workers-dir WORKERS_DIR [--python PYTHON]
set -eu

source_dir="" venv_dir="" workers_dir="" python="${PYTHON:-python3}"
while [ $# -gt 0 ]; do
    case "$1" in
        --source) source_dir="$2"; shift 2 ;;
        --venv) venv_dir="$2"; shift 2 ;;
        --workers-dir) workers_dir="$2"; shift 2 ;;
        --python) python="$2"; shift 2 ;;
        *) echo "install.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -n "$source_dir" ] || { echo "install.sh: --source REPO_DIR is required" >&2; exit 2; }
[ -n "$venv_dir" ] || { echo "install.sh: --venv VENV_DIR is required" >&2; exit 2; }
[ -n "$workers_dir" ] || { echo "install.sh: --workers-dir WORKERS_DIR is required" >&2; exit 2; }
if [ ! -f "$source_dir/pyproject.toml" ] || [ ! -d "$source_dir/host-image/workers" ]; then
    echo "install.sh: $source_dir is not a funcplane source tree (pyproject.toml, host-image/workers)" >&2
    exit 2
fi

"$python" -m venv "$venv_dir"
"$venv_dir/bin/pip" install --disable-pip-version-check -q \
    -r "$source_dir/host-image/requirements.txt"
# The distribution also carries the operator; the host image needs none of its dependencies.
"$venv_dir/bin/pip" install --disable-pip-version-check -q --no-deps "$source_dir"

mkdir -p "$workers_dir"
for worker in "$source_dir"/host-image/workers/*/; do
    name=$(basename "$worker")
    rm -rf "${workers_dir:?}/$name"
    cp -R "$worker" "$workers_dir/$name"
    find "$workers_dir/$name" -name __pycache__ -type d -prune -exec rm -rf {} +
    rm -f "$workers_dir/$name/Dockerfile"  # a worker's own image recipe, not part of it
done

# Fail the build, not the pod, when something is missing.
"$venv_dir/bin/python" -c "import funcplane_host.main, funcplane_protocol.FunctionRpc_pb2, funcplane_pyworker"
"$venv_dir/bin/funcplane-host" --help > /dev/null
echo "funcplane host installed: $venv_dir (workers in $workers_dir)"

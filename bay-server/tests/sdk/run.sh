#!/bin/sh
# Runs sdk_client.py in a venv under the cargo target directory (created on first use).
# usage: bay-server/tests/sdk/run.sh <bay url> [access token]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
target=${CARGO_TARGET_DIR:-$here/../../../target}
venv=$target/sdk-venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet 'shipyard-python-sdk>=0.2,<0.3'
fi
exec "$venv/bin/python" "$here/sdk_client.py" "$@"

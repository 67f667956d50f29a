#!/bin/sh
# The network-namespace testbed (see docs/testbed.md). All logic lives in
# solora_node/testbed/netns.py; this wrapper only picks the project's Python.
#   sudo deploy/netns/testbed.sh up --name demo --hosts 4
#   sudo deploy/netns/testbed.sh impair h4 --name demo --rate 2mbit --loss 10
#   sudo deploy/netns/testbed.sh link down h4 --name demo
#   sudo deploy/netns/testbed.sh status --name demo
#   sudo deploy/netns/testbed.sh down --name demo
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
[ -x "$python" ] || python=python3
exec "$python" -m solora_node.testbed.netns "$@"

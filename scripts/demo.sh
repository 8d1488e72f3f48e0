#!/usr/bin/env bash
# demo.sh: set up, then run dmkagent's main job against the simulators:
# a 3-node availability group (sqlsim, Configuration Manager's database) and
# HashiCorp Vault (vaultsim), on loopback over TLS.  Cleans up after itself.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec /usr/bin/python3 scripts/demo.py "$@"

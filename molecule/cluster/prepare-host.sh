#!/usr/bin/env bash
# Molecule's dependency step for the cluster scenario: the node image (as for
# the default scenario), and an empty host directory that stands in for the
# shared tenant storage (NFS in production) of this checkout's three nodes.
# The scenario's destroy step (destroy.yml, first and last) removes the nodes
# and the directory; one left by a killed run is started afresh here.
set -euo pipefail
"$(dirname "$0")/../default/build-image.sh"
shared=/var/tmp/jailyard-cluster-${JAILYARD_MOLECULE_ID:-default}
if [ -d "$shared" ]; then
	if findmnt -rn -o TARGET | grep -q "^$shared"; then
		echo "prepare-host: something is mounted under $shared; refusing to remove it" >&2
		exit 1
	fi
	rm -rf "$shared"
fi
mkdir -p "$shared/tenants"
chmod 755 "$shared" "$shared/tenants"

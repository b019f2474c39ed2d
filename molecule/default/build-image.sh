#!/usr/bin/env bash
# Molecule's dependency step: make the local podman image the scenario's node
# runs from. No image registry is reachable from our machines, so the image is
# debootstrapped here and imported (podman import), then kept: the rootfs
# tarball under $CACHE survives `podman rmi`, the image survives between runs.
set -euo pipefail

IMAGE=${JAILYARD_MOLECULE_IMAGE:-localhost/jailyard-molecule:bookworm}
CACHE=${JAILYARD_MOLECULE_CACHE:-/var/cache/jailyard/molecule}
MIRROR=${JAILYARD_MIRROR:-http://deb.debian.org/debian}
# python3 for Ansible, systemd to test the timer path; the build and image
# tools are the ones the roles would install (included so a run does not
# spend a minute in apt).
PACKAGES=python3,systemd,systemd-sysv,dbus,procps,iproute2,gcc,make,libc6-dev,debootstrap,ca-certificates

if podman image exists "$IMAGE"; then
	exit 0
fi
mkdir -p "$CACHE"
tarball="$CACHE/node-rootfs-$(echo "$PACKAGES" | md5sum | cut -c1-8).tar"
if [ ! -s "$tarball" ]; then
	work=$(mktemp -d /var/tmp/jailyard-molecule.XXXXXX)
	trap 'rm -rf "$work"' EXIT
	echo "debootstrap the molecule node image into $work (once; cached in $tarball)" >&2
	debootstrap --variant=minbase --include="$PACKAGES" bookworm "$work/rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 ||
		{ tail -30 "$work/debootstrap.log" >&2; exit 1; }
	# A container gets its machine-id from systemd at boot; apt caches are dead weight.
	: >"$work/rootfs/etc/machine-id"
	rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*_Packages
	# Nothing in a container should try to bring up consoles or udev.
	for unit in getty.target systemd-udevd.service systemd-udev-trigger.service console-getty.service; do
		ln -sf /dev/null "$work/rootfs/etc/systemd/system/$unit"
	done
	tar --numeric-owner -C "$work/rootfs" -cf "$tarball.tmp" .
	mv "$tarball.tmp" "$tarball"
fi
podman import --quiet --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' "$tarball" "$IMAGE" >/dev/null
echo "imported $IMAGE from $tarball" >&2

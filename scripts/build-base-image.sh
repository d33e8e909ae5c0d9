#!/usr/bin/env bash
# Build the debian:bookworm-slim base image from Debian's archive when no registry is
# reachable (as on the project's test machines), and import it into podman under the
# name the Dockerfile's `FROM debian:bookworm-slim` resolves to with --pull=never.
# Users with a registry never need this: docker pulls the real image.
#
# The rootfs is `debootstrap --variant=minbase bookworm`, slimmed the way the official
# slim variant is (debuerreotype's slimify: no docs, man pages or locales, and the same
# dpkg excludes so later apt installs stay slim too), plus the official image's apt
# settings (docker-clean, no translations). Does nothing when the image already exists
# unless --force is given.
#
# Usage: scripts/build-base-image.sh [--force]
# Environment: BASE_IMAGE (default docker.io/library/debian:bookworm-slim),
#   DEBIAN_MIRROR (default http://deb.debian.org/debian), CONTAINERS_CONF (set by default
#   to this repository's containers/containers.conf), PODMAN (default podman).
set -Eeuo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BASE_IMAGE=${BASE_IMAGE:-docker.io/library/debian:bookworm-slim}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PODMAN=${PODMAN:-podman}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$REPO/containers/containers.conf}

force=0
[[ "${1:-}" == "--force" ]] && force=1

# say MESSAGE: progress on stderr
say() { echo "build-base-image: $*" >&2; }

# die MESSAGE: fail with a message naming the fix
die() { echo "build-base-image: error: $*" >&2; exit 1; }

if ((!force)) && "$PODMAN" image exists "$BASE_IMAGE"; then
    say "$BASE_IMAGE already present"
    exit 0
fi
[[ $(id -u) -eq 0 ]] || die "debootstrap needs root; run as root (sudo $0)"
command -v debootstrap >/dev/null ||
    die "debootstrap not installed; apt-get install -y --no-install-recommends debootstrap"

rootfs=$(mktemp -d "${TMPDIR:-/var/tmp}/bookworm-rootfs.XXXXXX")
trap 'rm -rf "$rootfs"' EXIT

say "debootstrap --variant=minbase bookworm from $DEBIAN_MIRROR (about 30 s)"
debootstrap --variant=minbase bookworm "$rootfs" "$DEBIAN_MIRROR" >"$rootfs.log" 2>&1 || {
    tail -n 20 "$rootfs.log" >&2
    rm -f "$rootfs.log"
    die "debootstrap failed (log above); check that $DEBIAN_MIRROR is reachable"
}
rm -f "$rootfs.log"

# The official slim variant's dpkg excludes (debuerreotype .slimify-excludes/-includes).
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'CFG'
# This is the "slim" variant of the Debian base image.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/man/*
CFG
# The official image's apt settings.
cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'CFG'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CFG
echo 'Acquire::Languages "none";' >"$rootfs/etc/apt/apt.conf.d/docker-no-languages"
echo 'Apt::AutoRemove::SuggestsImportant "false";' >"$rootfs/etc/apt/apt.conf.d/docker-autoremove-suggests"
cat >"$rootfs/etc/apt/sources.list" <<LIST
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
LIST

# Slim it: what the excludes above would have kept out, then caches and logs.
(
    cd "$rootfs"
    find usr/share/doc -mindepth 2 ! -name copyright ! -type d -delete 2>/dev/null || true
    find usr/share/doc -mindepth 1 -type d -empty -delete 2>/dev/null || true
    find usr/share/locale -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} + 2>/dev/null || true
    rm -rf usr/share/groff/* usr/share/info/* usr/share/linda/* usr/share/lintian/overrides/* \
        usr/share/man/* var/cache/apt/archives/*.deb var/cache/apt/*.bin var/lib/apt/lists/* \
        var/log/*.log var/log/apt/* var/cache/debconf/*-old var/lib/dpkg/*-old
)
# A fresh machine-id is created per container; none in the image.
: >"$rootfs/etc/machine-id"

say "importing as $BASE_IMAGE"
tar --numeric-owner -C "$rootfs" -c . |
    "$PODMAN" import --change 'CMD ["bash"]' - "$BASE_IMAGE" >/dev/null
say "done: $("$PODMAN" image inspect --format '{{.Size}}' "$BASE_IMAGE") bytes"

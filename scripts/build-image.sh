#!/usr/bin/env bash
# Build the igwn-robot-get image (`make image`): with docker when a daemon answers, else
# with podman using this repository's containers/containers.conf. With podman and no
# registry, the debian:bookworm-slim base is first built from Debian's archive
# (scripts/build-base-image.sh) when it is missing. The Dockerfile stays what users build.
#
# pip in the Dockerfile's `wheels` stage checks PyPI's certificate. Where the network
# re-signs TLS with a CA only this host trusts (the project's test machines), podman first
# builds that stage alone with the host's CA bundle mounted where update-ca-certificates
# adds it to the stage's own bundle; the full build then reuses the cached stage and runs
# with no mount at all, so nothing of the host's CAs reaches the image. (Mounting over
# /etc/ssl/certs/ca-certificates.crt itself breaks ca-certificates' postinst.)
#
# Usage: scripts/build-image.sh
# Environment: IMAGE (default igwn-robot-get:latest), ENGINE (docker|podman, default: auto),
#   VERSION (default: the module's __version__), IMAGE_CONTEXT (default: the repository),
#   BUILD_CA_BUNDLE (podman; default /etc/ssl/certs/ca-certificates.crt, "none": no mount).
set -Eeuo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMAGE=${IMAGE:-igwn-robot-get:latest}
CONTEXT=${IMAGE_CONTEXT:-$REPO}

# say MESSAGE: progress on stderr
say() { echo "build-image: $*" >&2; }

# die MESSAGE: fail with a message naming the fix
die() { echo "build-image: error: $*" >&2; exit 1; }

# pick_engine: docker when its daemon answers, else podman
pick_engine() {
    if [[ -n "${ENGINE:-}" ]]; then
        echo "$ENGINE"
    elif command -v docker >/dev/null && timeout 10 docker info >/dev/null 2>&1; then
        echo docker
    elif command -v podman >/dev/null; then
        echo podman
    else
        die "neither a docker daemon nor podman; apt-get install -y --no-install-recommends podman runc"
    fi
}

[[ -f "$CONTEXT/igwn_robot_get.py" ]] || die "$CONTEXT/igwn_robot_get.py missing"
VERSION=${VERSION:-$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$CONTEXT/igwn_robot_get.py")}
VERSION=${VERSION:-dev}
engine=$(pick_engine)
args=(--build-arg "VERSION=$VERSION" --build-arg "IMAGE_REF=$IMAGE" -f "$REPO/Dockerfile")

if [[ "$engine" == podman ]]; then
    export CONTAINERS_CONF=${CONTAINERS_CONF:-$REPO/containers/containers.conf}
    podman image exists docker.io/library/debian:bookworm-slim ||
        "$REPO/scripts/build-base-image.sh"
    args+=(--pull=never --format docker)
    ca=${BUILD_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
    if [[ "$ca" != none && -f "$ca" ]]; then
        say "building the wheels stage with this host's CA bundle $ca"
        podman build "${args[@]}" --target wheels \
            -v "$ca:/usr/local/share/ca-certificates/build-host.crt:ro" "$CONTEXT" >&2
    fi
fi

say "building $IMAGE (version $VERSION) with $engine"
old=$("$engine" image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
"$engine" build "${args[@]}" -t "$IMAGE" "$CONTEXT"
new=$("$engine" image inspect --format '{{.Id}}' "$IMAGE")
# The previous build, now untagged: remove it unless a container still uses it.
if [[ -n "$old" && "$old" != "$new" ]]; then
    "$engine" rmi "$old" >/dev/null 2>&1 || true
fi
base=$("$engine" image inspect --format '{{.Size}}' debian:bookworm-slim 2>/dev/null || echo 0)
size=$("$engine" image inspect --format '{{.Size}}' "$IMAGE")
say "built $IMAGE: $((size / 1000000)) MB, $(((size - base) / 1000000)) MB on top of debian:bookworm-slim"

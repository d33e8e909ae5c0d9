# igwn-robot-get: a robot's Kerberos keytab -> a SciToken bearer token file, via Vault.
#
#   docker build --build-arg VERSION=1.1.0 -t igwn-robot-get .      (or: make image)
#   docker run --rm --user $(id -u):$(id -g) -v /path/to/tokens:/tokens \
#       -v /path/to/robot.keytab:/keytab:ro -e KRB5_KTNAME=/keytab igwn-robot-get [options]
#
# The final image holds Debian's python3, python3-requests, python3-gssapi and
# ca-certificates, plus requests-gssapi (pure Python; not packaged in bookworm), taken
# from its wheel in a build stage. No pip, compiler or -dev package is in the image.

# -- build stage: the requests-gssapi wheel, hash-checked, unpacked into /out -----------
FROM debian:bookworm-slim AS wheels
# requests-gssapi 1.3.0 needs requests >= 1.1 and any gssapi (bookworm: 2.28.1, 1.8.2)
# and Python >= 3.8 (bookworm: 3.11); the tool passes the mechanism explicitly.
ARG REQUESTS_GSSAPI="requests-gssapi==1.3.0 --hash=sha256:f36303cd989c54d54630c30f1ef73d7e23acdede2285c941631192e51b4da418"
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-pip \
 && rm -rf /var/lib/apt/lists/*
RUN printf '%s\n' "${REQUESTS_GSSAPI}" >/tmp/requirements.txt \
 && pip install --no-cache-dir --no-deps --no-compile --require-hashes \
        --target /out -r /tmp/requirements.txt

# -- the image ------------------------------------------------------------------------
FROM debian:bookworm-slim

# Debian pins nothing within a stable release: the versions are bookworm's, with its fixes.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-requests python3-gssapi \
        ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/debconf/*-old /var/lib/dpkg/*-old /var/log/apt/* \
        /var/log/dpkg.log \
 && groupadd --gid 10001 robot \
 && useradd --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --no-log-init \
        --shell /usr/sbin/nologin robot \
 && install -d -m 1777 -o 10001 -g 10001 /tokens

# requests-gssapi where Debian's python3 finds its own packages (dist-info included, so
# `python3 -m pip list` elsewhere and SBOM scanners see its version).
COPY --from=wheels /out/ /usr/lib/python3/dist-packages/
# The module goes there too, byte-compiled, so that `python3 -m` skips compiling it on
# every run; the command runs it as __main__ (its fast path).
COPY igwn_robot_get.py /usr/lib/python3/dist-packages/igwn_robot_get.py
COPY entrypoint.sh /usr/local/bin/entrypoint.sh
RUN python3 -m compileall -q --invalidation-mode unchecked-hash \
        /usr/lib/python3/dist-packages/igwn_robot_get.py \
        /usr/lib/python3/dist-packages/requests_gssapi \
 && printf '%s\n' '#!/bin/sh' 'exec /usr/bin/python3 -I -m igwn_robot_get "$@"' \
        >/usr/local/bin/igwn-robot-get \
 && chmod 0755 /usr/local/bin/igwn-robot-get /usr/local/bin/entrypoint.sh

# The image reference the tool prints in its "run it with docker run -it" hint.
ARG IMAGE_REF=igwn-robot-get:latest
ARG VERSION=dev
LABEL org.opencontainers.image.title="igwn-robot-get" \
      org.opencontainers.image.description="Turns a robot's Kerberos keytab into a SciToken bearer token file via HashiCorp Vault" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-slim"
# HOME for any --user UID (no passwd entry needed). XDG_RUNTIME_DIR=/tokens: the tool's
# own WLCG default ($BEARER_TOKEN_FILE, else $XDG_RUNTIME_DIR/bt_u<uid>) puts the token
# in the volume; the vault token cache stays in /tmp, out of it.
ENV HOME=/tmp \
    XDG_RUNTIME_DIR=/tokens \
    IGWN_ROBOT_GET_IMAGE="${IMAGE_REF}"
WORKDIR /tmp
USER 10001:10001
# Healthy while the token has at least 5 minutes left (hourly renewals with --minsecs
# 3600 leave it under an hour before each run, which is normal); never fetches. It runs
# the tool itself: a probe needs none of the entrypoint's checks.
HEALTHCHECK --interval=5m --timeout=10s --start-period=1m \
    CMD ["/usr/local/bin/igwn-robot-get", "--show", "--quiet", "--minsecs", "300"]
ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
CMD []

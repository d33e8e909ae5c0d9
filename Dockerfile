# igwn-robot-get: a robot's Kerberos keytab -> a SciToken bearer token file, via Vault.
#
#   docker build --build-arg VERSION=1.0.0 -t igwn-robot-get .      (or: make image)
#   docker run --rm --user $(id -u):$(id -g) -v /path/to/tokens:/tokens \
#       -v /path/to/robot.keytab:/keytab:ro -e KRB5_KTNAME=/keytab igwn-robot-get [options]
#
# Debian's python3 and python3-gssapi are all the tool needs: HTTP and TLS come from
# Python's standard library. No pip, compiler or -dev package is in the image.
FROM debian:bookworm-slim

# Debian pins nothing within a stable release: the versions are bookworm's, with its fixes.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-gssapi ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/debconf/*-old /var/lib/dpkg/*-old /var/log/apt/* \
        /var/log/dpkg.log \
 && groupadd --gid 10001 robot \
 && useradd --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --no-log-init \
        --shell /usr/sbin/nologin robot \
 && install -d -m 1777 -o 10001 -g 10001 /tokens

# The module goes where Debian's python3 finds it, byte-compiled, so that `python3 -m`
# skips compiling it on every run; the command runs it as __main__ (its fast path).
COPY igwn_robot_get.py /usr/lib/python3/dist-packages/igwn_robot_get.py
COPY entrypoint.sh /usr/local/bin/entrypoint.sh
RUN python3 -m compileall -q --invalidation-mode unchecked-hash \
        /usr/lib/python3/dist-packages/igwn_robot_get.py \
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
# HOME for any --user UID (no passwd entry needed); BEARER_TOKEN_FILE stays unset so the
# entrypoint defaults it to /tokens/bt_u<uid>; the vault token stays in /tmp/vt_u<uid>.
ENV HOME=/tmp \
    IGWN_ROBOT_GET_IMAGE="${IMAGE_REF}"
WORKDIR /tmp
USER 10001:10001
# Healthy while the token has at least 5 minutes left (hourly renewals with the default
# --minsecs 3600 leave it under an hour before each run, which is normal); never fetches.
HEALTHCHECK --interval=5m --timeout=10s --start-period=1m \
    CMD ["/usr/local/bin/entrypoint.sh", "--show", "--quiet", "--minsecs", "300"]
ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
CMD []

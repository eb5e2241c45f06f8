# The `busybox` test flavour: the static ship agent and Debian's static busybox in an image
# built `FROM scratch`, to prove the agent needs nothing from its image (no libc, no python).
# Build it with `cargo xtask ship-image --flavour busybox`.
ARG BASE=bay-base/debian:bookworm
FROM ${BASE} AS rootfs

ARG DEBIAN_FRONTEND=noninteractive
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends busybox-static; \
    rm -rf /var/lib/apt/lists/*; \
    mkdir -p /out/bin /out/sbin /out/usr/bin /out/usr/sbin /out/usr/local/bin /out/etc /out/tmp \
        /out/root /out/home /out/app/metadata /out/proc /out/sys /out/dev /out/run /out/var/tmp; \
    cp /bin/busybox /out/bin/busybox; \
    chroot /out /bin/busybox --install -s
COPY busybox-rootfs/ /out/
# The agent runs commands with `bash -l -c`: when busybox has no `bash` applet, `bash` runs ash.
RUN set -eux; \
    if [ ! -e /out/bin/bash ]; then printf '#!/bin/sh\nexec /bin/sh "$@"\n' > /out/bin/bash; \
        chmod 0755 /out/bin/bash; fi; \
    chmod 1777 /out/tmp /out/var/tmp; \
    chmod 0700 /out/root /out/app/metadata; \
    chmod 0644 /out/etc/passwd /out/etc/group; \
    chmod 0600 /out/etc/shadow; \
    /out/bin/busybox --list | grep -qx sh

FROM scratch
COPY --from=rootfs /out/ /
ARG SHIP_VERSION=0.0.0
ARG FLAVOUR=busybox
LABEL org.opencontainers.image.title="bay-ship" \
      org.opencontainers.image.description="Bay ship: the ship agent on busybox (test image)" \
      org.opencontainers.image.version="${SHIP_VERSION}" \
      bay.ship.flavour="${FLAVOUR}"
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
EXPOSE 8123
WORKDIR /
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/ship"]

# Last, so that a new agent binary rebuilds only this layer.
COPY ship /usr/local/bin/ship
# After the last step that runs a container: the classic builder leaks an anonymous volume
# per VOLUME path for every build step that follows it.
VOLUME ["/home", "/app/metadata"]

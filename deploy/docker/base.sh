#!/bin/sh
# Build a Debian 12 (bookworm) base image with Python 3.11 from Debian's own packages, for hosts
# that reach a Debian mirror but not a container registry. Needs root, debootstrap and a running
# Docker daemon:
#
#   sudo deploy/docker/base.sh                      # tags fedoversight-base:bookworm
#   sudo deploy/docker/base.sh my-registry/base:12  # any other tag
#
# Then pass it to either Dockerfile:
#
#   docker build --build-arg PYTHON_IMAGE=fedoversight-base:bookworm -f deploy/docker/... .
#
# The image holds a minimal Debian (debootstrap's minbase variant), python3 (3.11.2 in Debian 12),
# python3-venv (the Dockerfiles install into a virtual environment, since Debian's python3 refuses
# `pip install` into the system), and ca-certificates (the build stage fetches wheels over HTTPS).
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian); for a base that is the same
# every time, point it at a dated snapshot, e.g. http://snapshot.debian.org/archive/debian/20250520T000000Z.
set -eu

tag=${1:-fedoversight-base:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

rootfs=$(mktemp -d /var/tmp/fedoversight-base.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT INT TERM

debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$rootfs" "$mirror"

# Nothing the image needs at run time: package lists, caches, documentation.
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*

tar --numeric-owner -C "$rootfs" -c . | docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' \
    --message "Debian bookworm minbase with python3 and python3-venv from $mirror" \
    - "$tag"

docker run --rm --network none "$tag" python3 -c 'import sys, venv, ssl; print(sys.version)'

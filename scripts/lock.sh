#!/bin/sh
# Regenerate deploy/requirements.lock: every runtime dependency of pyproject.toml pinned to one
# version, with the hashes of its distributions, for CPython 3.11 on x86_64 Linux (glibc 2.28 or
# later). The Dockerfiles install exactly this set with `pip install --require-hashes --no-deps`,
# so an image built from the same commit gets the same dependencies whenever it is built.
#
#   scripts/lock.sh                          # add or drop what pyproject.toml now asks for,
#                                            # keep every other pin as it is
#   scripts/lock.sh --upgrade                # move every pin to the newest allowed release
#   scripts/lock.sh --upgrade-package duckdb # move one
#
# Needs uv (`pip install uv`, or the project's `dev` extra). Arguments go to `uv pip compile`.
# tests/unit/test_lock.py fails when the lock no longer satisfies pyproject.toml.
set -eu
cd "$(dirname "$0")/.."

exec uv pip compile pyproject.toml \
    --python-version 3.11 \
    --python-platform x86_64-manylinux_2_28 \
    --generate-hashes \
    --strip-extras \
    --index-url https://pypi.org/simple \
    --custom-compile-command scripts/lock.sh \
    --output-file deploy/requirements.lock \
    "$@"

#!/bin/sh
# `redis-server ARGS...` gets --protected-mode no, as in the upstream image; anything else runs as is.
set -eu
if [ "${1:-}" = redis-server ]; then
    shift
    exec redis-server "$@" --protected-mode no
fi
exec "$@"

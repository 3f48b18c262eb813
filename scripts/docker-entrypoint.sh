#!/bin/sh
# docker-entrypoint — the container image's first process (Dockerfile): runs
# `corral serve` on the standard's directories under $APP_ROOT (default /app;
# tests point it at a temporary directory laid out the same way):
#   $APP_ROOT/models           baked-in models
#   $APP_ROOT/external_models  mounted or downloaded models; corral links each
#                              entry into models/ at start and at every scan,
#                              baked-in models taking precedence
#   $APP_ROOT/samples          shared inputs, handed to every worker
# on 0.0.0.0:${PORT:-8766}, gRPC on ${GRPC_PORT:-8767} (corral reads
# GRPC_PORT and LOG_LEVEL itself). The state file (loads and scales kept
# across restarts, docs/repository.md) lives on the external-models volume, as a
# hidden file the repository scan skips: $CORRAL_STATE, else
# $APP_ROOT/external_models/.corral-state.db. Arguments that start with '-' are more
# `corral serve` options, after these, so a repeated one wins
# (`docker run corral --memory-budget 8GiB`, `... corral --host ::`); any
# other command runs instead of the daemon (`docker run -it corral sh`).
# `exec`: corral becomes this process, so `docker stop`'s SIGTERM reaches it.
set -eu

APP_ROOT=${APP_ROOT:-/app}

if [ "$#" -gt 0 ] && [ "${1#-}" = "$1" ]; then
    exec "$@"
fi

exec corral serve \
    --models "$APP_ROOT/models" \
    --external-models "$APP_ROOT/external_models" \
    --samples "$APP_ROOT/samples" \
    --state "${CORRAL_STATE:-$APP_ROOT/external_models/.corral-state.db}" \
    --host 0.0.0.0 \
    --port "${PORT:-8766}" \
    "$@"

#!/bin/sh
# Entry point of the dynomite-py image: run the command given (twistd -n
# dynomite ... by default), and unless DYNOMITE_LOCAL_REDIS=0, a
# redis-server on 127.0.0.1:${DYNOMITE_REDIS_PORT:-22122} beside it.
#
# SIGTERM goes to the node only; redis-server is stopped once the node has
# exited, so the node's graceful stop (finish in-flight requests, flush
# hints) still has its datastore.
set -eu

if [ "${DYNOMITE_LOCAL_REDIS:-1}" = 0 ]; then
    exec "$@"
fi

redis_dir=${DYNOMITE_REDIS_DIR:-/var/lib/dynomite/redis}
mkdir -p "$redis_dir"
redis-server --bind 127.0.0.1 --port "${DYNOMITE_REDIS_PORT:-22122}" \
    --save "" --appendonly no --dir "$redis_dir" --daemonize no &
redis_pid=$!

"$@" &
node_pid=$!

trap 'kill -TERM "$node_pid" 2>/dev/null || true' TERM INT
status=0
# wait returns early when a trapped signal arrives: wait again until the node is gone.
while kill -0 "$node_pid" 2>/dev/null; do
    wait "$node_pid" && status=0 || status=$?
done
kill -TERM "$redis_pid" 2>/dev/null || true
wait "$redis_pid" || true
exit "$status"

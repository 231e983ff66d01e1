#!/usr/bin/env bash
# A throwaway PostgreSQL on 127.0.0.1 for the checkpointer test (tests/test_agent_postgres.py).
#   bash tests/support/start_postgres.sh          install (Debian package) if missing, init, start
#   bash tests/support/start_postgres.sh stop     stop it
# On success the connection URL is written to $STRATOS_TEST_PG_DIR/url; the test reads it from there.
# Exits non-zero with the reason on stderr when the server cannot start (the test then skips, saying why).
set -euo pipefail
BASE="${STRATOS_TEST_PG_DIR:-/tmp/stratos-test-postgres}"
PORT="${STRATOS_TEST_PG_PORT:-55432}"
DATA="$BASE/data"
URL_FILE="$BASE/url"
DB=stratos_test
USER_NAME=stratos

find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
BIN="$(find_bin)"
if [ -z "$BIN" ] && [ "${1:-start}" != stop ]; then
    echo "postgres: not installed; installing the Debian package" >&2
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        echo "postgres: cannot install (need root and apt-get)" >&2; exit 1
    fi
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    BIN="$(find_bin)"
fi
[ -n "$BIN" ] || { echo "postgres: no server binaries found" >&2; exit 1; }

# The server refuses to run as root: use the package's `postgres` account then.
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

if [ "${1:-start}" = stop ]; then
    [ -d "$DATA" ] && as_owner "$BIN/pg_ctl" -D "$DATA" -m fast stop >/dev/null 2>&1 || true
    rm -f "$URL_FILE"
    exit 0
fi

mkdir -p "$BASE"
[ "$(id -u)" -eq 0 ] && chown postgres "$BASE"
if [ ! -f "$DATA/PG_VERSION" ]; then
    as_owner "$BIN/initdb" -D "$DATA" -U "$USER_NAME" --auth=trust >"$BASE/initdb.log" 2>&1 \
        || { echo "postgres: initdb failed: $(tail -3 "$BASE/initdb.log")" >&2; exit 1; }
fi
if ! as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    as_owner "$BIN/pg_ctl" -D "$DATA" -l "$BASE/server.log" -w -t 60 \
        -o "-p $PORT -k $BASE -c listen_addresses=127.0.0.1" start >/dev/null \
        || { echo "postgres: server did not start: $(tail -3 "$BASE/server.log")" >&2; exit 1; }
fi
as_owner "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U "$USER_NAME" -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname='$DB'" | grep -q 1 \
    || as_owner "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U "$USER_NAME" "$DB"
echo "postgresql://$USER_NAME@127.0.0.1:$PORT/$DB" > "$URL_FILE"
echo "postgres: ready at $(cat "$URL_FILE")"

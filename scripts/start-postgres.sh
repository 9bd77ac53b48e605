#!/usr/bin/env bash
# Starts a private PostgreSQL server on 127.0.0.1 (installing Debian's package if needed) and
# prints its SQLAlchemy URL. Idempotent: a server it started before is reused.
set -euo pipefail
PGPORT=${RAINIER_PG_PORT:-55432}
PGDATA=${RAINIER_PG_DATA:-/tmp/rainier-pg}
URL="postgresql+psycopg://rainier:rainier@127.0.0.1:${PGPORT}/rainier"

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bindir" ] || [ ! -x "$bindir/postgres" ]; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >&2
  fi
  bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
fi

run_as() {
  if [ "$(id -u)" = 0 ]; then su postgres -s /bin/bash -c "$*"; else bash -c "$*"; fi
}

if ! run_as "$bindir/pg_isready -q -h 127.0.0.1 -p $PGPORT"; then
  if [ ! -f "$PGDATA/PG_VERSION" ]; then
    mkdir -p "$PGDATA"
    [ "$(id -u)" = 0 ] && chown postgres "$PGDATA"
    run_as "$bindir/initdb -D $PGDATA -U postgres --auth=trust" >&2
  fi
  start="$bindir/pg_ctl -D $PGDATA -l $PGDATA/server.log -w -o '-c listen_addresses=127.0.0.1 -p $PGPORT -c unix_socket_directories=$PGDATA -c fsync=off -c max_connections=200' start"
  if ! run_as "$start" >&2; then
    # a throwaway test database (fsync off) that a crash left unreadable: start it anew
    echo "the PostgreSQL data in $PGDATA does not start; it is made anew" >&2
    rm -rf "$PGDATA" && mkdir -p "$PGDATA"
    [ "$(id -u)" = 0 ] && chown postgres "$PGDATA"
    run_as "$bindir/initdb -D $PGDATA -U postgres --auth=trust" >&2
    run_as "$start" >&2
  fi
fi

run_as "$bindir/psql -q -h 127.0.0.1 -p $PGPORT -U postgres -tc \"SELECT 1 FROM pg_roles WHERE rolname='rainier'\"" | grep -q 1 ||
  run_as "$bindir/psql -q -h 127.0.0.1 -p $PGPORT -U postgres -c \"CREATE ROLE rainier LOGIN PASSWORD 'rainier' SUPERUSER\"" >&2
run_as "$bindir/psql -q -h 127.0.0.1 -p $PGPORT -U postgres -tc \"SELECT 1 FROM pg_database WHERE datname='rainier'\"" | grep -q 1 ||
  run_as "$bindir/psql -q -h 127.0.0.1 -p $PGPORT -U postgres -c 'CREATE DATABASE rainier OWNER rainier'" >&2
echo "$URL"

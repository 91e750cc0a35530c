# Throwaway PostgreSQL and MariaDB servers for the test run, sourced by
# scripts/test. Each lives in a temporary directory on a free loopback port
# and is stopped (and its directory removed) when the test run ends, even
# on failure. Nothing here touches a database server it did not start.
#
# Exports ROWSYNC_TEST_POSTGRES and ROWSYNC_TEST_MYSQL, admin URLs the tests
# use to create a fresh database per test, and ROWSYNC_TEST_POSTGRES_CTL and
# ROWSYNC_TEST_MYSQL_CTL, scripts taking `stop`, `kill` (SIGKILL) or
# `start`, with which a test takes a database server away and brings it back.

ROWSYNC_DB_DIR="$(mktemp -d "${TMPDIR:-/tmp}/rowsync-test-dbs.XXXXXX")"
chmod 755 "$ROWSYNC_DB_DIR"
PG_BIN=""
PG_DATA="$ROWSYNC_DB_DIR/pg/data"
MY_DIR="$ROWSYNC_DB_DIR/mariadb"
MY_PID=""

as_db_user() {
  # PostgreSQL refuses to run as root: run it as an unprivileged user then.
  if [ "$(id -u)" = 0 ]; then runuser -u nobody -- "$@"; else "$@"; fi
}

stop_test_databases() {
  if [ -n "$PG_BIN" ] && [ -f "$PG_DATA/postmaster.pid" ]; then
    as_db_user "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate stop >/dev/null 2>&1 || true
  fi
  local my_server=""
  if [ -f "$MY_DIR/mariadb.pid" ]; then
    my_server="$(cat "$MY_DIR/mariadb.pid")"
    kill "$my_server" 2>/dev/null || true
  fi
  if [ -n "$MY_PID" ]; then
    kill "$MY_PID" 2>/dev/null || true
    wait "$MY_PID" 2>/dev/null || true
  fi
  # The server may still be writing its files as it shuts down (the process
  # waited for above can be the wrapper that started it): at most 10 s.
  local tries=0
  while [ -n "$my_server" ] && kill -0 "$my_server" 2>/dev/null && [ $tries -lt 100 ]; do
    sleep 0.1
    tries=$((tries + 1))
  done
  rm -rf "$ROWSYNC_DB_DIR" 2>/dev/null || rm -rf "$ROWSYNC_DB_DIR"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

install_packages() {
  local missing=()
  ls -d /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
  command -v mariadbd >/dev/null 2>&1 || command -v mysqld >/dev/null 2>&1 || missing+=(mariadb-server)
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "scripts/test: installing ${missing[*]} (Debian packages) for throwaway test servers" >&2
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  if ! $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >"$ROWSYNC_DB_DIR/apt.log" 2>&1; then
    $sudo apt-get update >>"$ROWSYNC_DB_DIR/apt.log" 2>&1 || true
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >>"$ROWSYNC_DB_DIR/apt.log" 2>&1 || {
      echo "scripts/test: cannot install ${missing[*]}; install them (apt-get install ${missing[*]}) and run again" >&2
      tail -5 "$ROWSYNC_DB_DIR/apt.log" >&2
      return 1
    }
  fi
  # The packages start system services; the tests never use them.
}

wait_for_port() {
  local port=$1 what=$2 log=$3
  for _ in $(seq 1 300); do
    if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "scripts/test: $what did not start on port $port; its log:" >&2
  tail -20 "$log" >&2
  return 1
}

start_postgres() {
  PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
  mkdir -p "$ROWSYNC_DB_DIR/pg"
  [ "$(id -u)" = 0 ] && chown nobody "$ROWSYNC_DB_DIR/pg"
  local port log="$ROWSYNC_DB_DIR/pg/server.log"
  port="$(free_port)"
  as_db_user "$PG_BIN/initdb" -D "$PG_DATA" -A trust -U postgres -E UTF8 --locale=C --no-sync >"$ROWSYNC_DB_DIR/pg-initdb.log" 2>&1 || {
    echo "scripts/test: initdb failed:" >&2; tail -20 "$ROWSYNC_DB_DIR/pg-initdb.log" >&2; return 1; }
  as_db_user "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$log" -w -t 60 \
    -o "-p $port -k $ROWSYNC_DB_DIR/pg -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null || {
    echo "scripts/test: PostgreSQL did not start; its log:" >&2; tail -20 "$log" >&2; return 1; }
  export ROWSYNC_TEST_POSTGRES="postgres://postgres@127.0.0.1:$port/postgres"
  local ctl="$ROWSYNC_DB_DIR/postgres-ctl"
  cat >"$ctl" <<CTL
#!/usr/bin/env bash
# stop|kill|start the throwaway PostgreSQL of this test run
set -e
run() { if [ "\$(id -u)" = 0 ]; then runuser -u nobody -- "\$@"; else "\$@"; fi; }
# Waits until process \$1 is gone: dead and reaped (a zombie still counts
# as a live postmaster for PostgreSQL), 10 s at most.
gone() { for _ in \$(seq 1 200); do [ -e /proc/\$1 ] || return 0; sleep 0.05; done; }
case "\$1" in
  stop) run "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null ;;
  start) run "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$log" -w -t 60 \
    -o "-p $port -k $ROWSYNC_DB_DIR/pg -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start \
    >"$ROWSYNC_DB_DIR/pg/ctl.log" 2>&1 || { cat "$ROWSYNC_DB_DIR/pg/ctl.log" >&2; exit 1; } ;;
  kill)
    # SIGKILL to the postmaster and every process of it at once, as a
    # crash does; the next start recovers from the WAL.
    pid="\$(head -1 "$PG_DATA/postmaster.pid")"
    kids="\$(pgrep -P "\$pid" || true)"
    kill -9 \$kids "\$pid" 2>/dev/null || true
    for p in \$kids "\$pid"; do gone "\$p"; done ;;
  *) echo "usage: \$0 stop|start|kill" >&2; exit 2 ;;
esac
CTL
  chmod +x "$ctl"
  export ROWSYNC_TEST_POSTGRES_CTL="$ctl"
}

start_mariadb() {
  local daemon install port log="$MY_DIR/server.log"
  daemon="$(command -v mariadbd || command -v mysqld)"
  install="$(command -v mariadb-install-db || command -v mysql_install_db)"
  mkdir -p "$MY_DIR"
  port="$(free_port)"
  "$install" --no-defaults --datadir="$MY_DIR/data" --auth-root-authentication-method=normal \
    --skip-test-db >"$MY_DIR/install.log" 2>&1 || {
    echo "scripts/test: mariadb-install-db failed:" >&2; tail -20 "$MY_DIR/install.log" >&2; return 1; }
  local ctl="$ROWSYNC_DB_DIR/mariadb-ctl"
  cat >"$ctl" <<CTL
#!/usr/bin/env bash
# stop|kill|start the throwaway MariaDB of this test run
set -e
case "\$1" in
  stop)
    pid="\$(cat "$MY_DIR/mariadb.pid")"
    kill "\$pid"
    while kill -0 "\$pid" 2>/dev/null; do sleep 0.1; done ;;
  kill)
    # SIGKILL, as a crash does; the next start recovers from InnoDB's log.
    pid="\$(cat "$MY_DIR/mariadb.pid")"
    kill -9 "\$pid"
    for _ in \$(seq 1 200); do [ -e /proc/\$pid ] || break; sleep 0.05; done ;;
  start)
    setsid "$daemon" --no-defaults --datadir="$MY_DIR/data" --port="$port" --bind-address=127.0.0.1 \
      --socket="$MY_DIR/mariadb.sock" --pid-file="$MY_DIR/mariadb.pid" --user="$(id -un)" \
      --innodb-flush-log-at-trx-commit=2 --max-connections=300 --log-error="$log" >>"$MY_DIR/stdout.log" 2>&1 </dev/null &
    for _ in \$(seq 1 300); do
      python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null && exit 0
      sleep 0.1
    done
    echo "MariaDB did not come back" >&2; exit 1 ;;
  *) echo "usage: \$0 stop|start|kill" >&2; exit 2 ;;
esac
CTL
  chmod +x "$ctl"
  "$ctl" start || { tail -20 "$log" >&2; return 1; }
  export ROWSYNC_TEST_MYSQL="mysql://root@127.0.0.1:$port/mysql"
  export ROWSYNC_TEST_MYSQL_CTL="$ctl"
}

start_test_databases() {
  install_packages
  start_postgres
  start_mariadb
}

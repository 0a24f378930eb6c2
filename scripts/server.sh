#!/usr/bin/env bash
# A local MLflow tracking server over a PostgreSQL backend store; everything it keeps lives under one folder
# (runs/server by default):
#   pg/data      the PostgreSQL cluster (owned by the user PostgreSQL runs as), pg/socket its Unix socket,
#   pg/postgres.log, pgpass (the database password, readable by the caller only), artifacts/ (what runs upload
#   through the server), mlflow.pid, mlflow.log.
#
#   scripts/server.sh install          install Debian's postgresql package when no PostgreSQL binaries are found
#   scripts/server.sh start [OPTS...]  install/initialise as needed, start PostgreSQL, then `mlflow server`
#                                      (extra OPTS go to `mlflow server`, e.g. --allowed-hosts); idempotent
#   scripts/server.sh stop             stop MLflow and PostgreSQL; idempotent
#   scripts/server.sh status           exit 0 when both are running
#
# Settings (environment): ABLATION_SERVER_DIR (runs/server), ABLATION_SERVER_HOST (127.0.0.1: set it, e.g. to
# 0.0.0.0, only to expose the server; see docs/tracking.md), ABLATION_SERVER_PORT (5001), ABLATION_PG_PORT (5433),
# ABLATION_SERVER_WORKERS (2), ABLATION_PG_BIN (PostgreSQL's bin folder; default: the newest
# /usr/lib/postgresql/*/bin), PY (the Python with mlflow and psycopg 3; default .venv/bin/python).
# PostgreSQL refuses to run as root: as root its commands run as the `postgres` user (ABLATION_PG_USER).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${ABLATION_SERVER_DIR:-$ROOT/runs/server}
HOST=${ABLATION_SERVER_HOST:-127.0.0.1}
PORT=${ABLATION_SERVER_PORT:-5001}
PG_PORT=${ABLATION_PG_PORT:-5433}
WORKERS=${ABLATION_SERVER_WORKERS:-2}
PY=${PY:-$ROOT/.venv/bin/python}
WAIT_S=${ABLATION_SERVER_WAIT_S:-120}
if [ -d "$DIR" ]; then DIR=$(cd "$DIR" && pwd); fi

die() { echo "server: $*" >&2; exit 1; }

if [ "$(id -u)" = 0 ]; then
  PG_USER=${ABLATION_PG_USER:-postgres}
  as_pg() { runuser -u "$PG_USER" -- "$@"; }
else
  PG_USER=$(id -un)
  as_pg() { "$@"; }
fi

pg_bin() {
  if [ -n "${ABLATION_PG_BIN:-}" ]; then
    echo "$ABLATION_PG_BIN"
    return
  fi
  local d found=
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V); do
    [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && found=$d
  done
  echo "$found"
}

install_pg() {
  [ -n "$(pg_bin)" ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    die "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb); as root: apt-get install postgresql"
  fi
  echo "server: installing PostgreSQL (apt-get install postgresql)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq postgresql >/dev/null
  [ -n "$(pg_bin)" ] || die "postgresql was installed but no initdb was found under /usr/lib/postgresql/*/bin"
}

ensure_pg_user() {
  [ "$(id -u)" = 0 ] || return 0
  id "$PG_USER" >/dev/null 2>&1 && return 0
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$PG_USER"
}

pg_running() { [ -f "$DIR/pg/data/PG_VERSION" ] && as_pg "$1/pg_ctl" status -D "$DIR/pg/data" >/dev/null 2>&1; }

# The cluster: password authentication on 127.0.0.1 (a random password, kept in pgpass for the caller only),
# peer authentication on the private socket.
init_pg() {
  local bin=$1 pw
  [ -f "$DIR/pg/data/PG_VERSION" ] && return 0
  mkdir -p "$DIR/pg/socket"
  if [ "$(id -u)" = 0 ]; then
    chown -R "$PG_USER" "$DIR/pg"
  fi
  chmod 700 "$DIR/pg" "$DIR/pg/socket"
  as_pg test -w "$DIR/pg" || die "user $PG_USER cannot write $DIR/pg; make its parent folders traversable (chmod o+x)"
  pw=$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
  (umask 077 && printf '%s\n' "$pw" >"$DIR/pg/pwfile")
  if [ "$(id -u)" = 0 ]; then
    chown "$PG_USER" "$DIR/pg/pwfile"
  fi
  echo "server: initialising PostgreSQL in $DIR/pg/data"
  as_pg "$bin/initdb" -D "$DIR/pg/data" -U "$PG_USER" --auth-local=peer --auth-host=scram-sha-256 \
    --pwfile="$DIR/pg/pwfile" -E UTF8 --no-locale >"$DIR/initdb.log" 2>&1 \
    || { rm -f "$DIR/pg/pwfile"; tail -n 20 "$DIR/initdb.log" >&2; die "initdb failed (log: $DIR/initdb.log)"; }
  rm -f "$DIR/pg/pwfile"
  (umask 077 && printf '127.0.0.1:*:mlflow:%s:%s\n' "$PG_USER" "$pw" >"$DIR/pgpass")
}

start_pg() {
  local bin=$1
  if ! pg_running "$bin"; then
    as_pg "$bin/pg_ctl" start -D "$DIR/pg/data" -l "$DIR/pg/postgres.log" -w -t "$WAIT_S" \
      -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -c unix_socket_directories='$DIR/pg/socket'" >/dev/null \
      || { tail -n 20 "$DIR/pg/postgres.log" >&2 || true; die "PostgreSQL did not start (log: $DIR/pg/postgres.log)"; }
  fi
  # The port it actually listens on (line 4 of postmaster.pid), should it have been started with another one.
  PG_PORT=$(sed -n 4p "$DIR/pg/data/postmaster.pid")
  local exists
  exists=$(as_pg "$bin/psql" -h "$DIR/pg/socket" -p "$PG_PORT" -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = 'mlflow'")
  if [ "$exists" != 1 ]; then
    as_pg "$bin/createdb" -h "$DIR/pg/socket" -p "$PG_PORT" mlflow
  fi
}

mlflow_pid() {
  local pid
  pid=$(cat "$DIR/mlflow.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -qa mlflow "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
}

# What a client on this machine uses: the bound address, or loopback when bound to every interface.
client_uri() {
  case "$HOST" in
    0.0.0.0 | "::" | "") echo "http://127.0.0.1:$PORT" ;;
    *:*) echo "http://[$HOST]:$PORT" ;;
    *) echo "http://$HOST:$PORT" ;;
  esac
}

healthy() { "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2).close()' "$1/health" 2>/dev/null; }

start() {
  local bin uri pid err
  err=$("$PY" -c 'import mlflow, psycopg' 2>&1) \
    || die "$PY cannot import mlflow and psycopg ($(tail -n 1 <<<"$err")); run make install (pip install -e '.[server]')"
  install_pg
  ensure_pg_user
  bin=$(pg_bin)
  mkdir -p "$DIR"
  DIR=$(cd "$DIR" && pwd)
  init_pg "$bin"
  start_pg "$bin"
  uri=$(client_uri)
  backend="postgresql+psycopg://$PG_USER@127.0.0.1:$PG_PORT/mlflow"
  if pid=$(mlflow_pid); then
    uri=$(cat "$DIR/mlflow.uri" 2>/dev/null || echo "$uri")
    echo "server: already running (pid $pid)"
  else
    case "$HOST" in
      127.0.0.1 | localhost | ::1) ;;
      *) echo "server: WARNING: listening on $HOST:$PORT; anyone who can reach it can read, change and delete every" \
        "run and artifact (no authentication). See docs/tracking.md, Tracking server." >&2 ;;
    esac
    mkdir -p "$DIR/artifacts"
    # MLflow's job runner (GenAI evaluation jobs) is not used by training runs and costs a dozen processes.
    PGPASSFILE="$DIR/pgpass" MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false} \
      setsid "$PY" -m mlflow server --backend-store-uri "$backend" \
      --serve-artifacts --artifacts-destination "$DIR/artifacts" \
      --host "$HOST" --port "$PORT" --workers "$WORKERS" "$@" >>"$DIR/mlflow.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$DIR/mlflow.pid"
    echo "$uri" >"$DIR/mlflow.uri"
    local waited=0
    until healthy "$uri"; do
      if ! kill -0 "$pid" 2>/dev/null; then
        rm -f "$DIR/mlflow.pid" "$DIR/mlflow.uri"
        tail -n 20 "$DIR/mlflow.log" >&2
        die "mlflow server exited (log: $DIR/mlflow.log)"
      fi
      if [ "$waited" -ge "$WAIT_S" ]; then
        stop_mlflow
        tail -n 20 "$DIR/mlflow.log" >&2
        die "mlflow server did not answer $uri/health within ${WAIT_S}s (log: $DIR/mlflow.log)"
      fi
      sleep 1
      waited=$((waited + 1))
    done
    echo "server: started (pid $pid, log $DIR/mlflow.log)"
  fi
  echo "backend: $backend"
  echo "artifacts: $DIR/artifacts"
  echo "tracking URI: $uri   (python -m ablation tracking=server with ABLATION_SERVER_PORT=${uri##*:})"
}

stop_mlflow() {
  local pid pgid i
  if pid=$(mlflow_pid); then
    # Started with setsid: its process group holds the server and its workers.
    pgid=$(awk '{print $5}' "/proc/$pid/stat" 2>/dev/null || echo "$pid")
    if [ "$pgid" = "$pid" ]; then kill -TERM -- "-$pgid" 2>/dev/null || true; else kill -TERM "$pid" || true; fi
    for i in $(seq 1 30); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 1
    done
    if kill -0 "$pid" 2>/dev/null; then
      if [ "$pgid" = "$pid" ]; then kill -KILL -- "-$pgid" 2>/dev/null || true; else kill -KILL "$pid" || true; fi
    fi
    echo "server: mlflow stopped (pid $pid)"
  fi
  rm -f "$DIR/mlflow.pid" "$DIR/mlflow.uri"
}

stop() {
  stop_mlflow
  local bin
  bin=$(pg_bin)
  if [ -n "$bin" ] && pg_running "$bin"; then
    as_pg "$bin/pg_ctl" stop -D "$DIR/pg/data" -m fast -w >/dev/null
    echo "server: PostgreSQL stopped"
  fi
  echo "server: stopped"
}

status() {
  local bin rc=0
  bin=$(pg_bin)
  if [ -n "$bin" ] && pg_running "$bin"; then echo "postgresql: running"; else echo "postgresql: stopped"; rc=3; fi
  if pid=$(mlflow_pid); then echo "mlflow: running (pid $pid) at $(cat "$DIR/mlflow.uri")"; else echo "mlflow: stopped"; rc=3; fi
  return $rc
}

command=${1:-}
shift || true
case "$command" in
  install) install_pg ;;
  start) start "$@" ;;
  stop) stop ;;
  status) status ;;
  *) die "usage: scripts/server.sh install|start [mlflow server options]|stop|status" ;;
esac

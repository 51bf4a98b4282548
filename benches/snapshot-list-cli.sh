#!/usr/bin/env bash
# `cairn snapshot list` end to end (a new process each time) over 10,000
# snapshot records, on the embedded SQLite file and on PostgreSQL, next to
# the fixed costs: `cairn --version` (process start) and a list of an empty
# store. The records are inserted with SQL (10% another organization's, 1%
# general, half active), the same mix as crates/snapshot/benches/list.rs.
#
#   benches/snapshot-list-cli.sh            # needs target/release/cairn, sqlite3,
#                                           # /usr/lib/postgresql/*/bin
# Prints the median of RUNS (default 21) wall-clock runs, in ms.
set -euo pipefail
cd "$(dirname "$0")/.."
CAIRN=${CAIRN:-$PWD/${CARGO_TARGET_DIR:-target}/release/cairn}
RUNS=${RUNS:-21}
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
dir=$(mktemp -d /var/tmp/cairn-list-bench-XXXXXX)
chmod 755 "$dir"
as_pg=()
[ "$(id -u)" = 0 ] && as_pg=(runuser -u cairntest --)
cleanup() {
    [ -d "$dir/pg" ] && "${as_pg[@]}" "$PG_BIN/pg_ctl" stop -D "$dir/pg" -m immediate -w >/dev/null 2>&1 || true
    if [ -n "${KEEP:-}" ]; then echo "kept $dir"; else rm -rf "$dir"; fi
}
trap cleanup EXIT

median_ms() { # command...
    local times=()
    for _ in $(seq "$RUNS"); do
        local t0 t1
        t0=$(date +%s%N)
        "$@" >/dev/null 2>&1
        t1=$(date +%s%N)
        times+=($(((t1 - t0) / 1000)))
    done
    printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)]/1000}'
}

# One record per row; $1 is the SQL of "now" in the database's dialect.
rows_sql() {
    local now=$1 tf=$2
    cat <<EOF
SELECT lpad(i::text, 8, '0') || '-0000-4000-8000-000000000000', i + 1,
       CASE WHEN i % 10 = 0 THEN 'other' ELSE 'default' END, i % 100 = 0,
       'app-' || (i % 50), '1.0.' || i,
       CASE WHEN i % 2 = 0 AND i % 10 <> 0 THEN 'active' ELSE 'pending' END, $now,
       json_build_object('id', lpad(i::text, 8, '0') || '-0000-4000-8000-000000000000',
         'name', 'app-' || (i % 50) || ':1.0.' || i,
         'organizationId', CASE WHEN i % 10 = 0 THEN 'other' ELSE 'default' END,
         'general', i % 100 = 0,
         'state', CASE WHEN i % 2 = 0 AND i % 10 <> 0 THEN 'active' ELSE 'pending' END,
         'imageName', 'localhost/snapshots/default/app-' || (i % 50) || ':1.0.' || i,
         'size', 0, 'entrypoint', json_build_array('sh'), 'cpu', 1, 'gpu', 0, 'mem', 1,
         'disk', 3, 'buildInfo', NULL, 'regionIds', json_build_array('eu'),
         'createdAt', $now, 'updatedAt', $now, 'lastUsedAt', NULL)::text
FROM $tf
EOF
}

echo "process start (cairn --version): $(median_ms "$CAIRN" --version) ms"

# SQLite: the store's own file.
store=$dir/store
"$CAIRN" --store "$store" snapshot list >/dev/null 2>&1
echo "embedded, empty store:            $(median_ms "$CAIRN" --store "$store" snapshot list) ms"
now="strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
sqlite3 "$store/meta.db" "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 9999)
INSERT INTO snapshots(id, seq, org, general, base_name, version, state, last_active, record)
SELECT printf('%08d-0000-4000-8000-000000000000', i), i + 1,
       CASE WHEN i % 10 = 0 THEN 'other' ELSE 'default' END, i % 100 = 0,
       'app-' || (i % 50), '1.0.' || i,
       CASE WHEN i % 2 = 0 AND i % 10 <> 0 THEN 'active' ELSE 'pending' END, $now,
       json_object('id', printf('%08d-0000-4000-8000-000000000000', i),
         'name', 'app-' || (i % 50) || ':1.0.' || i,
         'organizationId', CASE WHEN i % 10 = 0 THEN 'other' ELSE 'default' END,
         'general', json(CASE WHEN i % 100 = 0 THEN 'true' ELSE 'false' END),
         'state', CASE WHEN i % 2 = 0 AND i % 10 <> 0 THEN 'active' ELSE 'pending' END,
         'imageName', 'localhost/snapshots/default/app-' || (i % 50) || ':1.0.' || i,
         'size', 0, 'entrypoint', json('[\"sh\"]'), 'cpu', 1, 'gpu', 0, 'mem', 1, 'disk', 3,
         'buildInfo', NULL, 'regionIds', json('[\"eu\"]'),
         'createdAt', $now, 'updatedAt', $now, 'lastUsedAt', NULL)
FROM n;"
list=(list --state active --page 3 --limit 100 --format json)
"$CAIRN" --store "$store" snapshot "${list[@]}" >"$dir/out.json"
grep -q '"total": 4000' "$dir/out.json"
echo "embedded, 10k, state filter, page 3: $(median_ms "$CAIRN" --store "$store" snapshot "${list[@]}") ms"

# PostgreSQL: a throwaway server on a free loopback port.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir "$dir/pg"
if [ "$(id -u)" = 0 ]; then chown cairntest "$dir/pg"; fi
"${as_pg[@]}" "$PG_BIN/initdb" -D "$dir/pg" -U cairn --auth=trust --no-sync >/dev/null
"${as_pg[@]}" "$PG_BIN/pg_ctl" start -D "$dir/pg" -w -l "$dir/pg/log" \
    -o "-p $port -c listen_addresses=127.0.0.1 -k $dir/pg -c fsync=off" >/dev/null
url="postgres://cairn@127.0.0.1:$port/postgres?sslmode=disable"
pgstore=$dir/pgstore
"$CAIRN" --store "$pgstore" snapshot --snapshot-db "$url" list >/dev/null 2>&1
echo "postgres, empty:                  $(median_ms "$CAIRN" --store "$pgstore" snapshot --snapshot-db "$url" list) ms"
"${as_pg[@]}" "$PG_BIN/psql" -h 127.0.0.1 -p "$port" -U cairn -d postgres -q -c \
    "INSERT INTO cairn_snapshots(id, org, general, base_name, version, state, last_active, record)
     SELECT id, org, general, base_name, version, state, last_active, record FROM (
       $(rows_sql "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')" \
           "generate_series(0, 9999) AS i") ) AS r(id, seq, org, general, base_name, version, state, last_active, record)"
"$CAIRN" --store "$pgstore" snapshot --snapshot-db "$url" "${list[@]}" >"$dir/out.json"
grep -q '"total": 4000' "$dir/out.json"
echo "postgres, 10k, state filter, page 3: $(median_ms "$CAIRN" --store "$pgstore" snapshot --snapshot-db "$url" "${list[@]}") ms"

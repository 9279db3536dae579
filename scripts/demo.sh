#!/usr/bin/env bash
# Builds kuzu-sync, creates two replicas of ../shared/datasets/demo-db, writes to both
# while they are apart (including a conflicting update and concurrent counter increments),
# exchanges offline bundles both ways, and prints the converged graph of each. Then live
# sync: a hub (`kuzu-sync serve`) that compacts its log, a third replica bootstrapped from
# the hub's snapshot over the network and kept up to date with `sync --watch`, and all
# three checked equal.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

DATA="${DEMO_DATA:-$(cd .. && pwd)/shared/datasets/demo-db}"
[ -d "$DATA" ] || { echo "demo data not found at $DATA (set DEMO_DATA)" >&2; exit 1; }

# Kuzu's C++ build needs cmake, ninja and ccache (the latter two keep rebuilds fast).
if ! command -v cmake >/dev/null || ! command -v ninja >/dev/null || ! command -v ccache >/dev/null; then
  echo "== installing cmake, ninja-build and ccache" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq cmake ninja-build ccache >/dev/null
fi

echo "== building (the first build compiles KuzuDB's C++: 35-45 minutes on 2 cores)" >&2
cargo build --workspace --all-targets --quiet
KS="$CARGO_TARGET_DIR/debug/kuzu-sync"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/kuzu-sync-demo.XXXXXX")"
A="$WORK/replica-a"; B="$WORK/replica-b"
step() { echo; echo "== $*"; }

step "create replica A (peer node_a) and load demo-db into it"
"$KS" init "$A" --peer-id node_a
"$KS" schema "$A" "$DATA/schema.cypher"
"$KS" load "$A" "$DATA/copy.cypher"
echo "and a replicated counter column:"
printf '%s\n' '{"op":"ddl","cypher":"ALTER TABLE City ADD visits INT64 DEFAULT 0"}' \
              '{"op":"set_policy","table":"City","prop":"visits","policy":"counter"}' | "$KS" write "$A"

step "create replica B (peer node_b) from a bundle of A"
"$KS" init "$B" --peer-id node_b
"$KS" export "$A" --out "$WORK/a-full.bundle"
"$KS" import "$B" "$WORK/a-full.bundle"

step "write to both while they are apart"
"$KS" write "$A" <<'OPS'
{"op":"update","table":"User","key":"Adam","prop":"age","value":31}
{"op":"increment","table":"City","key":"Waterloo","prop":"visits","delta":5}
{"op":"add_node","table":"User","props":{"name":"Ines","age":28}}
{"op":"add_edge","table":"Follows","from":"Ines","to":"Adam","props":{"since":2024}}
OPS
sleep 0.05
"$KS" write "$B" <<'OPS'
{"op":"update","table":"User","key":"Adam","prop":"age","value":32}
{"op":"increment","table":"City","key":"Waterloo","prop":"visits","delta":3}
{"op":"delete_edge","table":"Follows","from":"Zhang","to":"Noura"}
OPS

step "exchange offline bundles both ways (each side exports what the other lacks)"
VV_A=$("$KS" status "$A" | sed -E 's/.*"version_vector":(\{[^}]*\}).*/\1/')
VV_B=$("$KS" status "$B" | sed -E 's/.*"version_vector":(\{[^}]*\}).*/\1/')
"$KS" export "$A" --since "$VV_B" --out "$WORK/a-to-b.bundle"
"$KS" export "$B" --since "$VV_A" --out "$WORK/b-to-a.bundle"
"$KS" import "$B" "$WORK/a-to-b.bundle"
"$KS" import "$A" "$WORK/b-to-a.bundle"
echo "importing the same bundle again changes nothing:"
"$KS" import "$A" "$WORK/b-to-a.bundle"

for R in "$A" "$B"; do
  step "converged graph of $(basename "$R")"
  "$KS" query "$R" "MATCH (u:User) RETURN u.name AS name, u.age AS age ORDER BY name"
  "$KS" query "$R" "MATCH (c:City) RETURN c.name AS city, c.visits AS visits ORDER BY city"
  "$KS" query "$R" "MATCH (a:User)-[f:Follows]->(b:User) RETURN a.name AS from, b.name AS to, f.since AS since ORDER BY from, to"
done

step "conflicts seen by replica A"
"$KS" conflicts "$A"

step "status"
"$KS" status "$A"
"$KS" status "$B"

if diff <("$KS" query "$A" "MATCH (n) RETURN label(n) AS l, n ORDER BY l, n.name") \
        <("$KS" query "$B" "MATCH (n) RETURN label(n) AS l, n ORDER BY l, n.name") >/dev/null; then
  echo; echo "replicas A and B hold the same graph"
else
  echo; echo "replicas A and B differ" >&2; exit 1
fi

step "live sync: start a hub (kuzu-sync serve) on a free loopback port"
HUB="$WORK/hub"
"$KS" init "$HUB" --peer-id hub >/dev/null
"$KS" serve "$HUB" --listen 127.0.0.1:0 --compact-every 1 >"$WORK/hub.log" 2>"$WORK/hub.err" &
HUB_PID=$!
WATCH_PID=
cleanup() { [ -n "$WATCH_PID" ] && kill "$WATCH_PID" 2>/dev/null; kill "$HUB_PID" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 1 600); do grep -q '"listening"' "$WORK/hub.log" 2>/dev/null && break; sleep 0.1; done
head -n1 "$WORK/hub.log"
ADDR=$(head -n1 "$WORK/hub.log" | sed -E 's/.*"address":"([^"]*)".*/\1/')
URL="tcp://$ADDR"

step "A and B sync with the hub (one-shot: handshake, exchange, EOSE, summary)"
"$KS" sync "$A" --remote "$URL" | tail -n1
"$KS" sync "$B" --remote "$URL" | tail -n1

step "the hub compacts its log (--compact-every 1): A and B hold every event"
for _ in $(seq 1 600); do grep -q '"compacted"' "$WORK/hub.log" 2>/dev/null && break; sleep 0.1; done
grep '"compacted"' "$WORK/hub.log" | head -n1

step "replica C (peer node_c) starts empty and bootstraps from the hub's snapshot (sync_mode snapshot)"
C="$WORK/replica-c"
"$KS" init "$C" --peer-id node_c >/dev/null
"$KS" sync "$C" --remote "$URL" | grep -E '"connect"|"snapshot"|"summary"'

step "C stays connected (sync --watch); A writes and syncs; the change streams to C"
"$KS" sync "$C" --remote "$URL" --watch >"$WORK/c-watch.log" 2>/dev/null &
WATCH_PID=$!
for _ in $(seq 1 600); do grep -q '"eose"' "$WORK/c-watch.log" 2>/dev/null && break; sleep 0.1; done
echo '{"op":"add_node","table":"User","props":{"name":"Live","age":1}}' | "$KS" write "$A" >/dev/null
"$KS" sync "$A" --remote "$URL" >/dev/null
for _ in $(seq 1 600); do grep -q '"change"' "$WORK/c-watch.log" 2>/dev/null && break; sleep 0.1; done
echo "lifecycle events printed by C's watch:"
cat "$WORK/c-watch.log"
kill -TERM "$WATCH_PID"; wait "$WATCH_PID" || true; WATCH_PID=
"$KS" sync "$B" --remote "$URL" >/dev/null

step "the three replicas hold the same graph"
Q="MATCH (n) RETURN label(n) AS l, n ORDER BY l, n.name"
"$KS" query "$C" "MATCH (u:User) RETURN u.name AS name, u.age AS age ORDER BY name"
if diff <("$KS" query "$A" "$Q") <("$KS" query "$C" "$Q") >/dev/null &&
   diff <("$KS" query "$B" "$Q") <("$KS" query "$C" "$Q") >/dev/null; then
  echo "replicas A, B and C hold the same graph"
else
  echo "replicas differ" >&2; exit 1
fi
kill -TERM "$HUB_PID"; wait "$HUB_PID" || true
trap - EXIT
echo "(replicas left in $WORK)"

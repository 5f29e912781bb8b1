#!/bin/bash
# Renders this fixture confdir with a renderer against a throwaway etcd, to
# (re)make expected/ from confd itself. Not part of the suite: it needs a
# confd binary (expected/ came from one built from confd's source with Go).
#
#   ./render-with-confd.sh /path/to/confd expected/   # from this directory
#
# `RENDERER="shylock render" ./render-with-confd.sh - /tmp/out` runs
# shylock the same way, for a diff. The Jinja resources (jinja*.toml) are
# shylock's own; their expected files were written from shylock's output
# and read by hand.
set -euo pipefail
confd=$1 out=$2
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
etcd --data-dir "$work/data" --listen-client-urls http://127.0.0.1:23790 \
  --advertise-client-urls http://127.0.0.1:23790 --listen-peer-urls http://127.0.0.1:23800 \
  >"$work/etcd.log" 2>&1 &
etcd_pid=$!
trap 'kill $etcd_pid; rm -rf "$work"' EXIT
export ETCDCTL_API=3
for _ in $(seq 50); do
  etcdctl --endpoints 127.0.0.1:23790 endpoint health >/dev/null 2>&1 && break
  sleep 0.2
done
python3 - "$here/keys.json" <<'PY'
import json, subprocess, sys
for key, value in json.load(open(sys.argv[1])).items():
    subprocess.run(["etcdctl", "--endpoints", "127.0.0.1:23790", "put", "/fixture" + key, value],
                   check=True, stdout=subprocess.DEVNULL)
PY
mkdir -p "$work/confdir" "$work/out" "$out"
cp -r "$here/conf.d" "$here/templates" "$work/confdir/"
find "$work/confdir/conf.d" -name '*.toml' -exec \
  sed -i "s#@OUT@#$work/out#; s#@PREFIX@#/fixture#; s#@CHECK@#test -s#" {} +
if [ "$confd" != - ]; then
  rm -f "$work"/confdir/conf.d/jinja*.toml
  renderer=$confd
else
  renderer=${RENDERER:?}
fi
SHYLOCK_FIXTURE_VAR=hello SHYLOCK_FIXTURE_EMPTY= $renderer -onetime -backend etcdv3 \
  -node http://127.0.0.1:23790 -confdir "$work/confdir" -log-level warn
cp "$work"/out/* "$out"/

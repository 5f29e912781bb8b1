# The two commands of shylock: `make demo` and `make test`.
.PHONY: all deps demo test lint fmt bench

all: test

# Install what is missing (etcd-server, etcd-client, protobuf-compiler, libprotobuf-dev, fuse3, nginx-light).
deps:
	@scripts/install-deps.sh

# Start a throwaway etcd and watch a service's typed config change live.
demo: deps
	cargo build --quiet -p shylock-examples --examples -p shylock-cli
	target/debug/examples/demo

# The whole suite against real etcd servers, then format and lint checks.
test: deps
	# Bounded, so a hang fails well inside CI's 90 minutes.
	timeout 2400 cargo test --workspace --no-fail-fast
	$(MAKE) lint

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
	cargo bench -p shylock --bench read_path -- --warm-up-time 1 --measurement-time 3
	target/release/examples/bench

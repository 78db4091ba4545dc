# Everyday recipes; each is a thin wrapper over cargo, so `just` is optional.

# Run the minimal demo (builds the example guests first).
demo:
    cargo run --release -p toka -- run config/minimal.toml --for 3s

# The several-agents demo.
demo-talk:
    cargo run --release -p toka -- run config/demo.toml --for 5s

# The test suite (README's test command).
test:
    cargo test --release --workspace

# Formatting and lints, as CI runs them.
lint:
    cargo fmt --all -- --check
    cargo clippy --release --workspace --all-targets -- -D warnings

# Build only the guests (they are also built automatically by tests and the demo).
guests:
    cd guests && cargo build --release --target wasm32-wasip2

# The seed's config/portable.toml end to end: moto as S3, the indexer and
# scheduler storing an index, a signed Stripe webhook printed by the Logger
# (needs `pip install 'moto[server]' boto3 stripe`).
portable:
    cargo build --release -p toka
    python3 tests/portable.py target/release/toka --for 10s

# Untrusted agents beside a healthy pipeline: containment end to end.
demo-hostile:
    cargo run --release -p toka -- run config/hostile.toml --for 5s

# Supply-chain checks as CI runs them (add `advisories` where the network allows).
deny:
    cargo deny check bans licenses sources

# Bounded fuzzing of the config loader and module loading (cargo install cargo-fuzz).
fuzz seconds="60":
    cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run config -- -max_total_time={{seconds}}
    cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run module -- -max_total_time={{seconds}}

# Performance: every scenario, a table and one `BENCH {json}` line each (add `--quick` for seconds).
bench *args:
    RUST_BACKTRACE=0 cargo run --release -p toka -- bench {{args}}

# The runtime-only build (no Cranelift) against modules a full build precompiled.
runtime-only:
    cargo build --release -p toka
    cp target/release/toka target/toka-full
    cargo build --release -p toka --no-default-features
    cp target/release/toka target/toka-runtime-only
    bash tests/runtime-only.sh target/toka-full target/toka-runtime-only

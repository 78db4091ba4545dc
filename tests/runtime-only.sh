#!/usr/bin/env bash
# The runtime-only build (`toka` without the `compiler` feature, so without
# Cranelift) runs modules a full build precompiled, and refuses anything
# else with an error that says what to do. Run by .ci/run; by hand:
#   cargo build --release -p toka && cp target/release/toka /tmp/toka-full
#   cargo build --release -p toka --no-default-features && cp target/release/toka /tmp/toka-lean
#   bash tests/runtime-only.sh /tmp/toka-full /tmp/toka-lean
set -euo pipefail
cd "$(dirname "$0")/.."
full="$1"
lean="$2"
export RUST_BACKTRACE=0 RUST_LOG=info NO_COLOR=1
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
fail() {
    echo "runtime-only: $*" >&2
    exit 1
}
# `expect CODE cmd...`: run cmd (output in $work/out), fail unless it exits CODE.
expect() {
    local want="$1" code=0
    shift
    "$@" >"$work/out" 2>&1 || code=$?
    [ "$code" = "$want" ] || fail "expected exit $want, got $code from $*: $(cat "$work/out")"
}

# 0. Each says what it is.
"$lean" --version | grep -q "runtime-only; features: none" || fail "lean --version: $("$lean" --version)"
"$full" --version | grep -q "features: compiler" || fail "full --version: $("$full" --version)"

# 1. A module with no artifact is named, with the command that fixes it;
#    --strict refuses to start (exit 2).
expect 2 "$lean" run config/minimal.toml --for 200ms --strict --cache-dir "$work/empty"
grep -q "logger.wasm" "$work/out" || fail "the module is not named: $(cat "$work/out")"
grep -q "runtime-only build" "$work/out" || fail "no explanation: $(cat "$work/out")"
grep -q "toka compile" "$work/out" || fail "no remedy: $(cat "$work/out")"

# 2. It cannot compile, and says so (exit 2).
expect 2 "$lean" compile --config config/minimal.toml --cache-dir "$work/cache"
grep -q "runtime-only build" "$work/out" || fail "compile refusal unclear: $(cat "$work/out")"

# 3. The full build precompiles for the config; the lean build runs it from
#    the cache (every module a hit) and the Logger sees the ticks.
expect 0 "$full" compile --config config/minimal.toml --cache-dir "$work/cache"
expect 0 "$lean" run config/minimal.toml --for 600ms --strict --cache-dir "$work/cache"
grep "modules loaded" "$work/out" | grep -q "hits=1 misses=0 rebuilt=0" ||
    fail "not loaded from the cache: $(cat "$work/out")"
grep -q 'kind="toka.tick"' "$work/out" || fail "the Logger saw no tick: $(cat "$work/out")"

# 4. A corrupt artifact is reported, not loaded (nothing can rebuild it here).
for f in "$work"/cache/*.cwasm; do
    printf 'x' | dd of="$f" bs=1 seek=100 conv=notrunc status=none
done
expect 2 "$lean" run config/minimal.toml --for 200ms --strict --cache-dir "$work/cache"
grep -q "checksum mismatch" "$work/out" || fail "corruption not named: $(cat "$work/out")"

# 5. A grant of a capability this build lacks is refused at once, naming the
#    rebuild (the key is known from the registration line, not passed to the
#    agent as a setting); "not granted" spelled out is accepted.
{
    printf 'modules_dir = "%s"\n' "$(pwd)/target/modules"
    sed -n '/^\[\[agents\]\]/,$p' config/minimal.toml
} >"$work/granted.toml"
cp "$work/granted.toml" "$work/denied.toml"
echo 'secrets = ["api/*"]' >>"$work/granted.toml"
echo 'vault = false' >>"$work/denied.toml"
expect 2 "$lean" check "$work/granted.toml" --cache-dir "$work/empty"
grep -q '`secrets` is granted but this build has no `secrets` capability (rebuild `toka` with `--features secrets`)' "$work/out" ||
    fail "the unbuilt grant is not refused by name: $(cat "$work/out")"
"$lean" check "$work/denied.toml" --cache-dir "$work/empty" >"$work/out" 2>&1 || true
if grep -q "is granted but" "$work/out"; then fail "vault = false refused: $(cat "$work/out")"; fi

size() {
    cp "$1" "$work/strip-me"
    strip "$work/strip-me"
    stat -c %s "$work/strip-me"
}
echo "runtime-only: ok; stripped sizes: full $(size "$full") bytes, runtime-only $(size "$lean") bytes"

#!/usr/bin/env bash
# Builds every Lambda function with cargo-lambda, for template.yaml:
#   target/lambda/<function>/bootstrap   (template.yaml's CodeUri: target/lambda/<function>/)
# x86_64 only: it is the one Rust target our build machines can install (see the
# Architecture parameter in template.yaml).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

# One entry per Lambda binary (a workspace package under functions/ with a bin of the
# same name). Add new functions here and in template.yaml.
FUNCTIONS=(api dispatch send import track recorder webhooks)
TARGET=x86_64-unknown-linux-gnu

# cargo-lambda links with zig (from the ziglang wheel) to target Lambda's glibc.
venv_install package "cargo-lambda==1.9.2" "ziglang==0.17.0"
export PATH="$VENV/bin:$PATH"

rustup target list --installed 2>/dev/null | grep -qx "$TARGET" || rustup target add "$TARGET"

target_dir="$(cargo_target_dir)"
# One cargo invocation for every function: they all enable only the `aws` adapters, so
# unifying their features links no local adapter, and the domain crate is compiled once
# (separate invocations each rebuilt it: their other dependencies unify differently).
packages=()
for function in "${FUNCTIONS[@]}"; do
  packages+=(-p "$function")
done
log "cargo lambda build: ${FUNCTIONS[*]} ($TARGET)"
cargo lambda build --release --target "$TARGET" "${packages[@]}"
for function in "${FUNCTIONS[@]}"; do
  bootstrap="$target_dir/lambda/$function/bootstrap"
  [ -x "$bootstrap" ] || die "cargo lambda build did not produce $bootstrap"
  if [ "$target_dir" != "$ROOT/target" ]; then
    # template.yaml's CodeUri is relative to the repository: target/lambda/<function>/.
    mkdir -p "$ROOT/target/lambda/$function"
    cp "$bootstrap" "$ROOT/target/lambda/$function/bootstrap"
  fi
  printf '%s: %s (%s bytes)\n' "$function" "target/lambda/$function/bootstrap" \
    "$(wc -c <"$bootstrap" | tr -d ' ')"
done

printf '\npackage.sh: built %s function(s): %s\n' "${#FUNCTIONS[@]}" "${FUNCTIONS[*]}"

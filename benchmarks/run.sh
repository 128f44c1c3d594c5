#!/usr/bin/env bash
# The benchmark from a fresh clone: `make bench` (or benchmarks/run.sh [--smoke] [python -m benchmarks args]).
# Installs what the run needs, then runs every measurement in one session (~25 min full, <1 min smoke):
#   Debian: nginx-light, wrk (as root with apt-get; a missing one is skipped, and the results say so)
#   Go:     vegeta (open-loop constant-rate load) into benchmarks/.tools/bin, when `go` is installed
#   PyPI:   LiteLLM's proxy into benchmarks/.litellm-venv; matplotlib + py-spy into benchmarks/.venv-tools
# --smoke installs nothing beyond the main .venv and uses whatever of the above is already there.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bench="$root/benchmarks"
VEGETA_VERSION=v12.13.0

"$root/scripts/bootstrap"

say() { echo "bench-setup: $*" >&2; }

apt_tools() {
  local need=()
  command -v wrk >/dev/null 2>&1 || need+=(wrk)
  [ -x /usr/sbin/nginx ] || need+=(nginx-light)
  [ ${#need[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    say "not root or no apt-get: install ${need[*]} yourself, or the run skips what needs them"; return 0
  fi
  # Debian starts a packaged nginx on 0.0.0.0:80 unless policy-rc.d forbids it: we only ever bind 127.0.0.1.
  local made_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
  fi
  say "installing ${need[*]} with apt-get"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" \
    >/dev/null || say "apt-get could not install ${need[*]}; the run skips what needs them"
  [ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d
  return 0
}

vegeta_tool() {
  [ -x "$bench/.tools/bin/vegeta" ] && return 0
  if ! command -v go >/dev/null 2>&1; then
    say "no Go toolchain: fixed-rate runs use the harness's own asyncio open-loop client"; return 0
  fi
  say "building vegeta $VEGETA_VERSION (Go module) into benchmarks/.tools/bin"
  if GOBIN="$bench/.tools/bin" go install "github.com/tsenart/vegeta/v12@$VEGETA_VERSION"; then
    echo "$VEGETA_VERSION" > "$bench/.tools/vegeta.version"
  else
    say "vegeta did not build; fixed-rate runs use the asyncio client"
  fi
}

# venv DIR REQUIREMENTS: (re)create a side venv when its requirements file changed.
side_venv() {
  local dir="$1" req="$2" want
  want="$(sha256sum "$req" | cut -d' ' -f1)"
  if [ -f "$dir/.installed" ] && [ "$(cat "$dir/.installed")" = "$want" ]; then return 0; fi
  say "installing $(grep -v '^#' "$req" | tr '\n' ' ') into ${dir#"$root"/}"
  rm -rf "$dir"
  python3 -m venv "$dir"
  "$dir/bin/python" -m pip install -q --upgrade pip >&2
  "$dir/bin/python" -m pip install -q -r "$req" >&2
  # A .pth file runs code at every interpreter start: the compromised LiteLLM 1.82.8 used one.
  local odd
  odd="$(find "$dir/lib" -maxdepth 3 -name '*.pth' ! -name 'distutils-precedence.pth' | head -5)"
  if [ -n "$odd" ]; then say "unexpected .pth files in $dir, refusing to use it:"; echo "$odd" >&2; exit 1; fi
  echo "$want" > "$dir/.installed"
}

if [ "${1:-}" != "--smoke" ]; then
  apt_tools
  vegeta_tool
  side_venv "$bench/.litellm-venv" "$bench/requirements-litellm.txt"
  side_venv "$bench/.venv-tools" "$bench/requirements-tools.txt"
fi

export BENCH_COMMAND="${BENCH_COMMAND:-benchmarks/run.sh${*:+ $*}}"
exec "$root/.venv/bin/python" -m benchmarks "$@"

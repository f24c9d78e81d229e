#!/usr/bin/env bash
# The one test command (npm test, .ci/run): installs what is missing, builds, and runs every unit
# and interop test in a single `node --test` run, so the runner's closing summary covers them all.
#
# Environment:
#   QCOW2KIT_SKIP_QEMU=1        run without qemu-utils; tests that need qemu-img/qemu-io skip
#                               themselves (and say so) instead of failing
#   QCOW2KIT_NO_NATIVE_ZSTD=1   run without the native zstd addon (zstd-napi, an optional
#                               dependency npm builds with g++, make and python3); its test skips
#   QCOW2KIT_TEST_CONCURRENCY   test files run in parallel (default 2, suits a 2-core machine)
#   QCOW2KIT_TEST_TIMEOUT_MS    time limit for one test (default 600000)
#   QCOW2KIT_KEEP_TMP=1         keep the interop tests' temporary directories
set -euo pipefail
shopt -s globstar nullglob

cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '[test.sh] %s\n' "$*"; }
die() { printf '[test.sh] error: %s\n' "$*" >&2; exit 1; }

# --- Node ----------------------------------------------------------------------------------------
command -v node >/dev/null || die "Node.js 20 or later is needed (apt-get install nodejs, or nodejs.org)"
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || die "Node.js 20 or later is needed; this is $(node --version)"

# --- Debian packages: qemu-utils (the oracle the interop tests compare against) and the compiler
# npm needs to build the optional native zstd addon (zstd-napi, built by node-gyp on npm ci) ------
have_qemu() { command -v qemu-img >/dev/null && command -v qemu-io >/dev/null; }
have_cc() { command -v g++ >/dev/null && command -v make >/dev/null && command -v python3 >/dev/null; }
need=()
if ! have_qemu && [ "${QCOW2KIT_SKIP_QEMU:-}" != "1" ]; then need+=(qemu-utils); fi
if ! have_cc && [ "${QCOW2KIT_NO_NATIVE_ZSTD:-}" != "1" ]; then need+=(g++ make python3); fi
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    say "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed"
    apt-get install -y -qq "${need[@]}" >/dev/null || die "apt-get install ${need[*]} failed"
  else
    cat >&2 <<EOF
[test.sh] error: missing Debian packages: ${need[*]}
(qemu-utils: qemu-img and qemu-io for the interop tests; g++ make python3: npm builds the native
zstd addon, zstd-napi, with them). Install them (Debian/Ubuntu):
    sudo apt-get update && sudo apt-get install -y ${need[*]}
or opt out: QCOW2KIT_SKIP_QEMU=1 skips the tests that need qemu-utils, QCOW2KIT_NO_NATIVE_ZSTD=1
the native zstd test (zstd then uses WebAssembly), e.g.
    QCOW2KIT_SKIP_QEMU=1 QCOW2KIT_NO_NATIVE_ZSTD=1 npm test
EOF
    exit 1
  fi
fi
if have_qemu; then
  say "$(qemu-img --version | head -n 1)"
elif [ "${QCOW2KIT_SKIP_QEMU:-}" = "1" ]; then
  say "qemu-img/qemu-io not found; QCOW2KIT_SKIP_QEMU=1, so the tests that need them will be skipped"
else
  die "qemu-utils installed but qemu-img/qemu-io still not found"
fi

# --- dependencies --------------------------------------------------------------------------------
# npm ci when node_modules is missing or older than the lockfile / package.json.
if [ ! -f node_modules/.package-lock.json ] \
  || [ package-lock.json -nt node_modules/.package-lock.json ] \
  || [ package.json -nt node_modules/.package-lock.json ]; then
  say "npm ci"
  npm ci --no-audit --no-fund
fi
# node_modules made before a compiler was there lacks the optional addon (npm drops an optional
# dependency whose build fails): install again now that the compiler is there.
have_addon() { node -e "require('zstd-napi/binding')" 2>/dev/null; }
if [ "${QCOW2KIT_NO_NATIVE_ZSTD:-}" != "1" ] && ! have_addon; then
  say "npm ci (the native zstd addon is missing)"
  npm ci --no-audit --no-fund
  have_addon || die "the native zstd addon (zstd-napi) did not build; QCOW2KIT_NO_NATIVE_ZSTD=1 runs without it"
fi

# --- build -------------------------------------------------------------------------------------
say "build: npm run build, tsc -p tsconfig.test.json"
npm run --silent build
rm -rf dist-test
npx --no-install tsc -p tsconfig.test.json

# --- test files ----------------------------------------------------------------------------------
# Only compiled tests whose source still exists: a deleted test may linger in dist/.
files=()
for f in dist/**/*.test.js; do
  src="src/${f#dist/}"
  [ -f "${src%.js}.ts" ] && files+=("$f")
done
for f in dist-test/**/*.test.js; do
  src="test/${f#dist-test/}"
  [ -f "${src%.js}.ts" ] && files+=("$f")
done
[ "${#files[@]}" -gt 0 ] || die "no test files found under dist/ or dist-test/"
say "running ${#files[@]} test files"

# --- run: one runner invocation, its summary (# tests / # pass / # fail) closes the output ------
set +e
node --test \
  --test-reporter=tap \
  --test-concurrency="${QCOW2KIT_TEST_CONCURRENCY:-2}" \
  --test-timeout="${QCOW2KIT_TEST_TIMEOUT_MS:-600000}" \
  "${files[@]}"
status=$?
set -e
exit "$status"

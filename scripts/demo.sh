#!/usr/bin/env bash
# npm run demo: qcow2kit's main job on a sample it makes itself. Builds a small qcow2 image with
# data, zero clusters, compressed clusters and a backing file, then runs `info`, `map`,
# `convert -O raw` and `compare` on it and prints what they say.
#
# The sample is made with qcow2kit itself when its `create`, `convert -c` and `io write` commands
# work; otherwise with qemu-img/qemu-io (installed with apt-get when running as root).
# QCOW2KIT_DEMO_DIR chooses where the sample goes (default: a new temporary directory).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)
kit() { node "$repo/bin/qcow2kit" "$@"; }
if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
say() { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; }
show() { printf '$ qcow2kit %s\n' "$*"; kit "$@"; }
die() { printf '[demo.sh] error: %s\n' "$*" >&2; exit 1; }

command -v node >/dev/null || die "Node.js 20 or later is needed"
[ "$(node -p 'process.versions.node.split(".")[0]')" -ge 20 ] || die "Node.js 20 or later is needed; this is $(node --version)"

# --- dependencies and build (as scripts/test.sh does) ----------------------------------------------
if [ ! -f node_modules/.package-lock.json ] \
  || [ package-lock.json -nt node_modules/.package-lock.json ] \
  || [ package.json -nt node_modules/.package-lock.json ]; then
  echo "[demo.sh] npm ci"
  npm ci --no-audit --no-fund
fi
echo "[demo.sh] npm run build"
npm run --silent build

dir=${QCOW2KIT_DEMO_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/qcow2kit-demo.XXXXXX")}
mkdir -p "$dir"
cd "$dir"
rm -f base.qcow2 sample.qcow2 sample.raw source.raw

# --- the sample ----------------------------------------------------------------------------------
# source.raw (4 MiB): 1 MiB of compressible text, 1 MiB of zeros, 1 MiB of random bytes, 1 MiB text.
node --input-type=module -e '
  import { writeFileSync } from "node:fs";
  const MiB = 1 << 20, buf = new Uint8Array(4 * MiB);
  let seed = 42;
  const rnd = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) >>> 16) & 0xff;
  const words = ["qcow2", "cluster", "backing", "snapshot", "refcount", "zero", "data", "table"];
  const text = (start, len) => {
    let s = "";
    for (let i = 0; s.length < len; i++) s += `${i}: ${words[rnd() % 8]} ${words[rnd() % 8]} ${rnd()}\n`;
    buf.set(new TextEncoder().encode(s.slice(0, len)), start);
  };
  text(0, MiB);
  for (let i = 2 * MiB; i < 3 * MiB; i++) buf[i] = rnd();
  text(3 * MiB, MiB);
  writeFileSync("source.raw", buf);
'

# base.qcow2: compressed copy of source.raw. sample.qcow2: 8 MiB overlay on base.qcow2 with a
# pattern write, a zeroed range that hides backing data, and data past the end of its backing file.
writes=(-c 'write -P 0xab 64k 128k' -c 'write -z 1M 256k' -c 'write -P 0xcd 6M 64k')
made_by=""
if kit convert -q -c -O qcow2 source.raw base.qcow2 2>/dev/null \
  && kit create -q -f qcow2 -b base.qcow2 -F qcow2 sample.qcow2 8M >/dev/null 2>&1 \
  && kit io "${writes[@]}" sample.qcow2 >/dev/null 2>&1; then
  made_by="qcow2kit"
else
  rm -f base.qcow2 sample.qcow2
  if ! command -v qemu-img >/dev/null || ! command -v qemu-io >/dev/null; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
      echo "[demo.sh] qcow2kit cannot write images yet; installing qemu-utils to make the sample"
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq && apt-get install -y -qq qemu-utils >/dev/null
    else
      die "qcow2kit cannot write images yet, and qemu-img/qemu-io are missing: sudo apt-get install -y qemu-utils"
    fi
  fi
  qemu-img convert -c -O qcow2 source.raw base.qcow2
  qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 sample.qcow2 8M
  qemu-io "${writes[@]}" sample.qcow2 >/dev/null
  made_by="qemu-img/qemu-io"
fi

say "Sample in $dir (made with $made_by)"
echo "base.qcow2   4 MiB, compressed: text, zeros, random bytes, text (source.raw)"
echo "sample.qcow2 8 MiB overlay: 0xab at 64k+128k, zeros at 1M+256k, 0xcd at 6M+64k"

say "info: what the image is"
show info --backing-chain sample.qcow2

say "map: where each range of the guest disk lives"
show map sample.qcow2 --output=json

say "convert: the guest disk as a raw file"
show convert -O raw sample.qcow2 sample.raw
ls -ls sample.raw

say "compare: the raw file has the same content"
show compare sample.qcow2 sample.raw
if command -v qemu-img >/dev/null; then
  printf '$ qemu-img compare sample.qcow2 sample.raw\n'
  qemu-img compare sample.qcow2 sample.raw
fi

say "Done. Files are in $dir"

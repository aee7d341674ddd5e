#!/bin/sh
# pack.sh SRC OUT PROD_ONLY: a deterministic tar of the runnable qmesh package in SRC
# (same content, same bytes), written to OUT only if it differs. Prints "changed" or "unchanged".
set -eu
src=$1 out=$2 prod_only=$3
cd "$src"
for f in package.json dist/daemon/cli/main.js native/qmesh_native.node node_modules; do
  [ -e "$f" ] || { echo "pack.sh: $src/$f missing: qmesh_source_dir must be a built checkout (npm ci)" >&2; exit 2; }
done
list=$(mktemp)
trap 'rm -f "$list" "$out.tmp"' EXIT
printf '%s\n' package.json README.md dist native/qmesh_native.node systemd iptables > "$list"
if [ "$prod_only" = true ] && npm ls --omit=dev --all --parseable >"$list.npm" 2>/dev/null; then
  sed "s|^$(pwd)/||" "$list.npm" | grep '^node_modules/' | sort -u \
    | awk 'BEGIN { last = "" } last != "" && index($0, last "/") == 1 { next } { print; last = $0 }' >> "$list"
else
  echo node_modules >> "$list"
fi
rm -f "$list.npm"
# Only what exists (README.md, iptables/ are documentation).
existing=$(mktemp)
while read -r p; do [ -e "$p" ] && echo "$p"; done < "$list" > "$existing"
mv "$existing" "$list"
mkdir -p "$(dirname "$out")"
tar --create --file "$out.tmp" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
  --mode=go-w --format=gnu --exclude='*.tsbuildinfo' --files-from "$list"
if [ -f "$out" ] && cmp -s "$out" "$out.tmp"; then
  echo unchanged
else
  mv "$out.tmp" "$out"
  echo changed
fi

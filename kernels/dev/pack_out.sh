# Sourced by the device-call scripts: what comes back from the device is limited in file count,
# so at exit everything under $OUT is packed into one archive in 12 MB pieces
# (cat results.tgz.part* | tar xz). Sourcing it twice packs once.
if [ -z "${MLAHOST_PACK_SET:-}" ]; then
  export MLAHOST_PACK_SET=1
  pack_out() {
    ( cd "$OUT" && tar czf /tmp/results.tgz --exclude='results.tgz.part*' . && find . -mindepth 1 -maxdepth 1 ! -name 'results.tgz.part*' -exec rm -rf {} + \
      && split -b 12M /tmp/results.tgz results.tgz.part )
  }
  trap pack_out EXIT
fi

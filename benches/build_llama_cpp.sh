#!/usr/bin/env bash
# Builds llama.cpp (llama-bench, llama-server, llama-cli) as the reference
# engine for benchmarks and integration tests, and prints the directory
# holding the binaries on the last line of stdout. Build logs go to stderr.
#
# Debian has no llama.cpp package and only package registries are reachable,
# so the sources come from the llama-cpp-python sdist on PyPI, which vendors
# llama.cpp. The build is cached outside the repo and reused as long as the
# binaries exist (delete the directory to rebuild):
#   ${KBQA_LLAMA_CPP_DIR:-$HOME/.cache/kbqa/llama.cpp-0.3.36}/bin
# Takes ~10-15 minutes on 2 cores the first time.
#
# Usage: benches/build_llama_cpp.sh        (env: KBQA_LLAMA_CPP_DIR, JOBS)
set -euo pipefail

LLAMA_CPP_PY_VERSION=0.3.36
SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
DIR="${KBQA_LLAMA_CPP_DIR:-$HOME/.cache/kbqa/llama.cpp-$LLAMA_CPP_PY_VERSION}"
BIN="$DIR/bin"
TARGETS=(llama-bench llama-server llama-cli)
JOBS="${JOBS:-2}"

have_all() {
  local t
  for t in "${TARGETS[@]}"; do [[ -x "$BIN/$t" ]] || return 1; done
}

if have_all; then
  echo "$BIN"
  exit 0
fi

mkdir -p "$DIR"
# A bench and a test may ask for the build at the same time: one builds,
# the other waits and then finds the binaries.
exec 9> "$DIR/.lock"
flock 9
if have_all; then
  echo "$BIN"
  exit 0
fi

log() { echo "build_llama_cpp: $*" >&2; }
start=$SECONDS

# cmake: the system's if recent enough (the UI asset step needs 3.18),
# otherwise the PyPI wheel in a private venv, so no root or apt is needed.
# ninja is optional; it comes along with the venv.
cmake_ok() {
  command -v cmake > /dev/null || return 1
  python3 - "$(cmake --version | head -n 1 | awk '{print $3}')" <<'PY'
import sys
v = tuple(int(x) for x in sys.argv[1].split(".")[:2])
sys.exit(0 if v >= (3, 18) else 1)
PY
}
if ! cmake_ok; then
  VENV="$DIR/cmake-venv"
  if [[ ! -x "$VENV/bin/cmake" ]]; then
    log "installing cmake from PyPI into $VENV"
    python3 -m venv "$VENV"
    # Pinned to the 3.x line the build was verified with (3.31).
    "$VENV/bin/python" -m pip install -q --only-binary :all: 'cmake>=3.25,<4' ninja >&2
  fi
  export PATH="$VENV/bin:$PATH"
fi
GENERATOR=()
if command -v ninja > /dev/null; then GENERATOR=(-G Ninja); fi

# Sources. cmake must be on PATH first: preparing the sdist's metadata runs
# scikit-build-core, which otherwise pulls cmake in as a build dependency.
# Only llama-cpp-python itself is forced to source; --no-binary :all: would
# also compile its build dependencies (cmake, ninja) from source.
SRC="$DIR/src/llama_cpp_python-$LLAMA_CPP_PY_VERSION/vendor/llama.cpp"
if [[ ! -f "$SRC/CMakeLists.txt" ]]; then
  log "downloading llama-cpp-python==$LLAMA_CPP_PY_VERSION sdist"
  rm -rf "$DIR/src" "$DIR/src.tmp" "$DIR/dl"
  mkdir -p "$DIR/dl" "$DIR/src.tmp"
  python3 -m pip download -q --no-deps --no-binary llama-cpp-python \
    "llama-cpp-python==$LLAMA_CPP_PY_VERSION" -d "$DIR/dl" >&2
  TARBALL="$DIR/dl/llama_cpp_python-$LLAMA_CPP_PY_VERSION.tar.gz"
  echo "$SDIST_SHA256  $TARBALL" | sha256sum -c --quiet - >&2
  # Unpack aside and rename, so an interrupted unpack is not taken for sources.
  tar -xzf "$TARBALL" -C "$DIR/src.tmp"
  mv "$DIR/src.tmp" "$DIR/src"
  rm -rf "$DIR/dl"
fi

# Why these flags:
# - GGML_NATIVE=OFF plus explicit ISA flags: the native build dies with an
#   illegal instruction in AMX code on these VMs, so AMX stays off and the
#   AVX-512 family (present here) is switched on by hand. AVX-VNNI (the VEX
#   form) is absent on these CPUs and stays at its default OFF.
# - static libs: bin/ is self-contained and can be copied or cached as is.
# - no OpenSSL, no UI: nothing in the build or at run time reaches for the
#   network (the server UI would otherwise be downloaded at build time).
log "configuring (cmake $(cmake --version | head -n 1 | awk '{print $3}'))"
cmake -S "$SRC" -B "$DIR/build" "${GENERATOR[@]}" \
  -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_SHARED_LIBS=OFF \
  -DGGML_NATIVE=OFF \
  -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
  -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_BF16=ON \
  -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF \
  -DGGML_OPENMP=ON \
  -DLLAMA_OPENSSL=OFF \
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF \
  -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON >&2

log "building ${TARGETS[*]} with -j$JOBS"
cmake --build "$DIR/build" --config Release -j "$JOBS" --target "${TARGETS[@]}" >&2

# Publish bin/ atomically: "binaries exist" must mean "build finished".
rm -rf "$BIN.tmp"
mkdir -p "$BIN.tmp"
for t in "${TARGETS[@]}"; do cp "$DIR/build/bin/$t" "$BIN.tmp/"; done
rm -rf "$BIN"
mv "$BIN.tmp" "$BIN"
log "done in $((SECONDS - start)) s"
echo "$BIN"

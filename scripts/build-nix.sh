#!/usr/bin/env bash
# Build Nix 2.35.2 from source into ~/.cache/flakegate/nix-2.35.2 (bin/nix).
#
# Optional tooling for issue 13 (testing flakegate against a current Nix client).
# CI never calls this script: .ci/run and scripts/test.sh must not depend on it.
#
# Idempotent: when the prefix already holds a working bin/nix, it prints the path and
# does nothing else. Each finished stage leaves a stamp in the work dir, so a rerun
# after a failure resumes at the stage that failed.
#
# No internet is assumed. Sources come from bare git mirrors (one per GitHub repo,
# laid out as $NIX235_MIRROR/<owner>+<name>/repo, as the session `fetch` tool does);
# system libraries come from Debian (bookworm) packages.
#
# Why this toolchain: Nix 2.35 is C++23 and uses std::ranges::to / std::views::zip,
# which bookworm's libstdc++ 12 lacks; clang-19 with libc++-19 (both in apt) has them.
# Every C++ dependency that Nix links (boost) is therefore built here with libc++ too;
# bdw-gc from apt is built against libstdc++, so Nix is built with -Dlibexpr:gc=disabled.
#
# Environment:
#   NIX235_PREFIX  install prefix        (default ~/.cache/flakegate/nix-2.35.2)
#   NIX235_WORK    sources and builds    (default ~/.cache/flakegate/nix-2.35.2-build)
#   NIX235_MIRROR  bare git mirrors      (default /work/.mirror)
#   NIX235_JOBS    parallel jobs         (default 2)
#   NIX235_APT=1   apt-get install the Debian packages listed below when missing (root)
#
# Using it: internal/nixtest and test/e2e find nix, nix-store and nix-instantiate on PATH,
# so the real-Nix tests run against this Nix with
#   PATH=$HOME/.cache/flakegate/nix-2.35.2/bin:$PATH go test ./test/e2e/ ./internal/blobserverapp/
# (they use chroot stores under temporary dirs, never /nix/store or /nix/var).
#
# Measured on the 2-core shared dev machine (load 15-25 from other jobs, nice 19):
# sources 84s, meson 16s, boost 512s, blake3 11s, curl 336s, libgit2 567s,
# nix setup 73s, nix build: see the report of the run (about 2 TUs a minute).
set -euo pipefail

NIX_TAG=2.35.2
BOOST_TAG=boost-1.89.0
CURL_TAG=curl-8_17_0
BLAKE3_TAG=1.8.2
LIBGIT2_TAG=v1.9.1
MESON_TAG=1.10.2

PREFIX=${NIX235_PREFIX:-$HOME/.cache/flakegate/nix-$NIX_TAG}
WORK=${NIX235_WORK:-$HOME/.cache/flakegate/nix-$NIX_TAG-build}
MIRROR=${NIX235_MIRROR:-/work/.mirror}
JOBS=${NIX235_JOBS:-2}
NICE="nice -n 19"

APT_PACKAGES=(clang-19 libc++-19-dev libc++abi-19-dev lld-19 ninja-build cmake bison flex
  pkg-config python3 libssl-dev zlib1g-dev libarchive-dev libsodium-dev libzstd-dev
  libbrotli-dev nlohmann-json3-dev libtoml11-dev libreadline-dev libnghttp2-dev libpsl-dev
  libsqlite3-dev libbz2-dev liblzma-dev)

# Boost libraries whose headers Nix (or another boost library it uses) includes.
BOOST_LIBS=(algorithm align array asio assert atomic bind chrono concept_check config container
  container_hash context conversion core coroutine coroutine2 date_time describe detail endian
  exception filesystem format function function_types functional fusion integer intrusive io
  iostreams iterator lexical_cast move mp11 mpl numeric_conversion optional pool predef
  preprocessor random range ratio regex scope smart_ptr stacktrace static_assert system
  thread throw_exception tokenizer tuple type_index type_traits typeof unordered url utility
  variant variant2 winapi)

T0=$(date +%s)
log() { printf '[build-nix %s +%4ss] %s\n' "$(date -u +%H:%M:%S)" "$(($(date +%s) - T0))" "$*"; }
die() { log "FAILED: $*"; exit 1; }

STAMPS=$WORK/stamps

# stage NAME FUNC: run FUNC unless its stamp exists; print its duration.
stage() {
  local name=$1 fn=$2 start
  if [ -e "$STAMPS/$name" ]; then
    log "stage $name: done before ($(cat "$STAMPS/$name")s), skipped"
    return
  fi
  log "stage $name: start"
  start=$(date +%s)
  "$fn"
  echo $(($(date +%s) - start)) >"$STAMPS/$name"
  log "stage $name: done in $(cat "$STAMPS/$name")s"
}

# export_repo OWNER+NAME REF DEST: write the tree of REF from the bare mirror into DEST.
# Optional further arguments restrict the export to those top-level paths (some mirrors
# lack blobs outside the code, e.g. under doc/).
export_repo() {
  local repo=$1 ref=$2 dest=$3 gd=$MIRROR/$1/repo
  shift 3
  [ -d "$gd" ] || die "no mirror $gd (bring github:${repo/+//} with the fetch tool)"
  rm -rf "$dest" && mkdir -p "$dest"
  git --git-dir="$gd" archive "$ref" -- "$@" | tar -x -C "$dest" ||
    die "cannot export $repo $ref${*:+ ($*)} from $gd"
}

CC=clang-19
CXX=clang++-19
LIBCXX_FLAGS="-stdlib=libc++"

s_tools() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "${NIX235_APT:-0}" = 1 ]; then
      $NICE apt-get install -y -qq "${missing[@]}"
    else
      die "missing Debian packages: ${missing[*]} (install them, or rerun with NIX235_APT=1 as root)"
    fi
  fi
  command -v $CXX >/dev/null || die "$CXX not found"
}

s_sources() {
  export_repo NixOS+nix "$NIX_TAG" "$WORK/src/nix"
  export_repo mesonbuild+meson "$MESON_TAG" "$WORK/src/meson"
  export_repo curl+curl "$CURL_TAG" "$WORK/src/curl"
  export_repo BLAKE3-team+BLAKE3 "$BLAKE3_TAG" "$WORK/src/blake3"
  export_repo libgit2+libgit2 "$LIBGIT2_TAG" "$WORK/src/libgit2"
  # boost: the superproject's submodules are gitlinks; take each library at the commit
  # the release tag pins, from its own repository.
  local super=$MIRROR/boostorg+boost/repo lib commit path
  [ -d "$super" ] || die "no mirror $super (fetch github:boostorg/boost)"
  rm -rf "$WORK/src/boost" && mkdir -p "$WORK/src/boost/libs"
  for lib in "${BOOST_LIBS[@]}"; do
    path=libs/$lib
    [ "$lib" = numeric_conversion ] && path=libs/numeric/conversion
    commit=$(git --git-dir="$super" ls-tree "$BOOST_TAG" "$path" | awk '$2=="commit"{print $3}')
    [ -n "$commit" ] || die "boost $BOOST_TAG has no $path"
    if ! git --git-dir="$MIRROR/boostorg+$lib/repo" cat-file -e "$commit^{tree}" 2>/dev/null; then
      # Some mirrors are older snapshots without the pinned commit: take their newest
      # commit instead (boost libraries stay source compatible across releases).
      log "boost $lib: mirror lacks $BOOST_TAG's commit ${commit:0:12}; using its HEAD" \
        "($(git --git-dir="$MIRROR/boostorg+$lib/repo" log -1 --format='%h %cs' HEAD))"
      commit=$(git --git-dir="$MIRROR/boostorg+$lib/repo" rev-parse HEAD)
    fi
    # shellcheck disable=SC2046
    export_repo "boostorg+$lib" "$commit" "$WORK/src/boost/libs/$lib" \
      $(git --git-dir="$MIRROR/boostorg+$lib/repo" ls-tree --name-only "$commit" | grep -xE 'include|src')
  done
}

s_meson() {
  # meson >= 1.8 is pure Python; run it from its source tree.
  mkdir -p "$PREFIX/libexec/meson"
  cp -a "$WORK/src/meson/." "$PREFIX/libexec/meson/"
  mkdir -p "$WORK/bin"
  printf '#!/bin/sh\nexec python3 %s/libexec/meson/meson.py "$@"\n' "$PREFIX" >"$WORK/bin/meson"
  chmod +x "$WORK/bin/meson"
  "$WORK/bin/meson" --version
}

BOOST_INC=$PREFIX/boost/include
BOOST_CXXFLAGS="-std=c++17 $LIBCXX_FLAGS -O2 -fPIC -DBOOST_ALL_NO_LIB -DBOOST_ALL_DYN_LINK"

# boost_lib NAME SOURCES...: compile SOURCES into $PREFIX/lib/libboost_NAME.so.
boost_lib() {
  local name=$1 obj=$WORK/build/boost/$1 objs=() src o
  shift
  mkdir -p "$obj"
  for src in "$@"; do
    o=$obj/$(echo "$src" | tr / _).o
    objs+=("$o")
    [ -s "$o" ] && continue
    # at most $JOBS compilers at once
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
    case $src in
      *.S) $NICE $CC -c -fPIC "$src" -o "$o.tmp" && mv "$o.tmp" "$o" & ;;
      *.c) $NICE $CC -c -O2 -fPIC -I"$BOOST_INC" "$src" -o "$o.tmp" && mv "$o.tmp" "$o" & ;;
      *) $NICE $CXX -c $BOOST_CXXFLAGS -I"$BOOST_INC" "$src" -o "$o.tmp" && mv "$o.tmp" "$o" & ;;
    esac
  done
  local j
  for j in $(jobs -rp); do wait "$j"; done
  for o in "${objs[@]}"; do [ -s "$o" ] || die "boost $name: $o was not built"; done
  $CXX -shared $LIBCXX_FLAGS -o "$PREFIX/lib/libboost_$name.so.1.89.0" -Wl,-soname,libboost_$name.so.1.89.0 \
    -Wl,-rpath,"$PREFIX/lib" "${objs[@]}" -L"$PREFIX/lib" "${BOOST_LINK[@]}"
  ln -sf "libboost_$name.so.1.89.0" "$PREFIX/lib/libboost_$name.so"
}

s_boost() {
  local b=$WORK/src/boost/libs lib
  # Boost headers get their own include dir: curl's, blake3's and libgit2's pkg-config
  # files put $PREFIX/include on the command line as -I, and boost headers seen through
  # -I instead of -isystem fail Nix's -Werror=suggest-override.
  rm -rf "$PREFIX/include/boost" "$BOOST_INC"
  mkdir -p "$BOOST_INC" "$PREFIX/lib"
  for lib in "${BOOST_LIBS[@]}"; do
    [ -d "$b/$lib/include/boost" ] && cp -a "$b/$lib/include/boost" "$BOOST_INC/"
  done
  # The libraries that Nix's meson asks for by name (others it uses are header-only).
  BOOST_LINK=()
  local a=$b/context/src/asm
  (cd "$b/context/src" && boost_lib context "$a/make_x86_64_sysv_elf_gas.S" "$a/jump_x86_64_sysv_elf_gas.S" \
    "$a/ontop_x86_64_sysv_elf_gas.S" fcontext.cpp posix/stack_traits.cpp)
  BOOST_LINK=(-lboost_context)
  (cd "$b/coroutine/src" && boost_lib coroutine detail/coroutine_context.cpp exceptions.cpp posix/stack_traits.cpp)
  BOOST_LINK=()
  (cd "$b/container/src" && boost_lib container alloc_lib.c dlmalloc.cpp global_resource.cpp \
    monotonic_buffer_resource.cpp pool_resource.cpp synchronized_pool_resource.cpp \
    unsynchronized_pool_resource.cpp)
  (cd "$b/iostreams/src" && boost_lib iostreams file_descriptor.cpp mapped_file.cpp)
  (cd "$b/url/src" && boost_lib url $(find . -name '*.cpp' | sort))
}

s_blake3() {
  local bd=$WORK/build/blake3
  rm -rf "$bd"
  $NICE cmake -S "$WORK/src/blake3/c" -B "$bd" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_INSTALL_PREFIX="$PREFIX" -DCMAKE_INSTALL_LIBDIR=lib -DBUILD_SHARED_LIBS=ON \
    -DCMAKE_INSTALL_RPATH="$PREFIX/lib"
  $NICE ninja -C "$bd" -j"$JOBS" install
}

s_curl() {
  local bd=$WORK/build/curl
  rm -rf "$bd"
  $NICE cmake -S "$WORK/src/curl" -B "$bd" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_INSTALL_PREFIX="$PREFIX" -DCMAKE_INSTALL_LIBDIR=lib -DBUILD_SHARED_LIBS=ON \
    -DBUILD_STATIC_LIBS=OFF -DBUILD_CURL_EXE=OFF -DBUILD_TESTING=OFF -DBUILD_LIBCURL_DOCS=OFF \
    -DBUILD_MISC_DOCS=OFF -DENABLE_CURL_MANUAL=OFF -DCURL_USE_OPENSSL=ON -DUSE_NGHTTP2=ON \
    -DCURL_BROTLI=ON -DCURL_ZSTD=ON -DCURL_USE_LIBSSH2=OFF -DCURL_USE_LIBPSL=ON \
    -DUSE_LIBIDN2=OFF -DCURL_DISABLE_LDAP=ON -DCMAKE_INSTALL_RPATH="$PREFIX/lib"
  $NICE ninja -C "$bd" -j"$JOBS" install
}

s_libgit2() {
  local bd=$WORK/build/libgit2
  rm -rf "$bd"
  $NICE cmake -S "$WORK/src/libgit2" -B "$bd" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_INSTALL_PREFIX="$PREFIX" -DCMAKE_INSTALL_LIBDIR=lib -DBUILD_SHARED_LIBS=ON \
    -DBUILD_TESTS=OFF -DBUILD_CLI=OFF -DUSE_SSH=OFF -DUSE_HTTPS=OpenSSL \
    -DREGEX_BACKEND=builtin -DUSE_HTTP_PARSER=builtin -DCMAKE_INSTALL_RPATH="$PREFIX/lib"
  $NICE ninja -C "$bd" -j"$JOBS" install
}

s_nix_setup() {
  local bd=$WORK/build/nix
  rm -rf "$bd"
  export PKG_CONFIG_PATH="$PREFIX/lib/pkgconfig"
  export BOOST_INCLUDEDIR="$BOOST_INC" BOOST_LIBRARYDIR="$PREFIX/lib"
  # Not wanted here, and it configures itself whenever LLVM is found (clang-19 brings
  # LLVM's cmake files) but then lacks clang-tidy's headers.
  sed -i "/subproject('clang-tidy-plugin'/d" "$WORK/src/nix/meson.build"
  # Debian's nlohmann_json 3.11.2 cannot assign a std::optional<ExperimentalFeature>
  # (src/nix/main.cc, two places): assign the value (or null) explicitly.
  sed -i 's|j\["experimentalFeature"\] = implem.experimentalFeature;|j["experimentalFeature"] = implem.experimentalFeature ? nlohmann::json(*implem.experimentalFeature) : nlohmann::json(nullptr);|; s|b\["experimental-feature"\] = primOp->experimentalFeature;|b["experimental-feature"] = *primOp->experimentalFeature;|' "$WORK/src/nix/src/nix/main.cc"
  # -O1 without debug info: this Nix is a test client, and on a small shared machine
  # compile time is what counts (clang also gets Nix's precompiled headers).
  CC=$CC CXX=$CXX CC_LD=lld CXX_LD=lld \
    CFLAGS="-O1" CXXFLAGS="$LIBCXX_FLAGS -O1 -isystem $BOOST_INC" \
    LDFLAGS="$LIBCXX_FLAGS -Wl,-rpath,$PREFIX/lib -L$PREFIX/lib" \
    $NICE "$WORK/bin/meson" setup "$bd" "$WORK/src/nix" \
    --prefix="$PREFIX" --libdir=lib --buildtype=plain -Db_lto=false \
    -Dunit-tests=false -Dfunctional-tests=false -Ddoc-gen=false -Djson-schema-checks=false \
    -Dbenchmarks=false \
    -Dlibstore:seccomp-sandboxing=disabled -Dlibutil:cpuid=disabled \
    -Dlibcmd:markdown=disabled -Dlibcmd:readline-flavor=readline \
    -Dlibexpr:gc=disabled -Dnix:mimalloc=disabled
}

s_nix_build() {
  # -k 0: on a failure keep compiling the rest, so that a fix and rerun resumes with
  # only what failed left to do.
  $NICE ninja -C "$WORK/build/nix" -j"$JOBS" -k 0
}

s_nix_install() {
  $NICE "$WORK/bin/meson" install -C "$WORK/build/nix" --quiet
  "$PREFIX/bin/nix" --version
}

main() {
  if [ -x "$PREFIX/bin/nix" ] && "$PREFIX/bin/nix" --version >/dev/null 2>&1; then
    echo "$PREFIX/bin/nix"
    exit 0
  fi
  mkdir -p "$WORK/src" "$STAMPS" "$PREFIX"
  stage tools s_tools
  stage sources s_sources
  stage meson s_meson
  stage boost s_boost
  stage blake3 s_blake3
  stage curl s_curl
  stage libgit2 s_libgit2
  stage nix-setup s_nix_setup
  stage nix-build s_nix_build
  stage nix-install s_nix_install
  
  log "total $(($(date +%s) - T0))s"
  for f in "$STAMPS"/*; do printf '  %-12s %5ss\n' "$(basename "$f")" "$(cat "$f")"; done
  echo "$PREFIX/bin/nix"
}

# Everything runs from main, so editing this file while it runs is harmless.
main "$@"; exit

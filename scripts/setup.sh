#!/usr/bin/env bash
# Installs what rfork needs on a Debian bookworm machine, idempotently:
#  - Debian build dependencies (for CRIU and rfork itself),
#  - CRIU >= 4.1 built from Debian trixie's source tarball (bookworm's 3.17 fails on new kernels),
#    with its kernel-feature cache (RUNDIR) on a tmpfs and scripts/criu-rfork.patch applied
#    (directional pipe ends for --inherit-fd; external files keep no size, mode or position; inherited terminals need no session; rlimits from /proc without CAP_SYS_RESOURCE; a session leader in an ancestor PID namespace is outside the shell job, for a zombie too; with CRIU_RFORK_CLOCK_SYNC, clocks follow the realtime a move took; a memfd marked external is supplied at restore like an external file; an O_PATH memfd descriptor is restored without a file position; marked "GitID: rfork-18"),
#  - kernel settings (pipe-max-size for post-copy).
# Re-running it does nothing when everything is already in place.
set -euo pipefail

CRIU_PREFIX=${CRIU_PREFIX:-/usr/local}
CRIU_RUNDIR=${CRIU_RUNDIR:-/dev/shm/criu}       # must be on tmpfs: CRIU caches kernel features there
WORK=${RFORK_SETUP_WORK:-/var/cache/rfork-setup}
CRIU_MARK=rfork-18
CRIU_VERSION=4.1.1-1
HERE=$(cd "$(dirname "$0")" && pwd)
log() { printf 'setup: %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
    echo "setup: must run as root (it installs packages and builds CRIU); run: sudo make setup" >&2
    exit 1
fi

DEPS=(build-essential pkg-config git iproute2 util-linux openssl procps psmisc
      libprotobuf-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler python3-protobuf
      libnl-3-dev libcap-dev libnet1-dev libbsd-dev uuid-dev libaio-dev
      patch strace bsdutils python3 etcd-server spin nftables)
missing=()
for p in "${DEPS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

criu_ok() {
    command -v criu >/dev/null 2>&1 || return 1
    local v; v=$(criu --version 2>/dev/null | sed -n 's/^Version: *//p')
    case "$v" in 4.*|5.*) ;; *) return 1 ;; esac
    criu --version 2>/dev/null | grep -q "GitID: $CRIU_MARK"
}

if ! criu_ok; then
    log "building CRIU from Debian trixie's source tarball (about 30 s)"
    mkdir -p "$WORK/apt/lists/partial" "$WORK/apt/archives/partial" "$WORK/src"
    cat > "$WORK/apt/sources.list" <<SRC
deb-src http://deb.debian.org/debian trixie main
SRC
    APTOPT=(-o "Dir::Etc::SourceList=$WORK/apt/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
            -o "Dir::State::Lists=$WORK/apt/lists" -o "Dir::Cache::Archives=$WORK/apt/archives"
            -o "Debug::NoLocking=1")
    apt-get "${APTOPT[@]}" update -qq
    # Pinned: scripts/criu-rfork.patch is written against exactly this source.
    (cd "$WORK/src" && apt-get "${APTOPT[@]}" source --tar-only --download-only "criu=$CRIU_VERSION" >/dev/null) || {
        echo "setup: Debian trixie no longer offers the CRIU source $CRIU_VERSION; update CRIU_VERSION and the patch" >&2
        exit 1
    }
    tarball=$(ls "$WORK"/src/criu_"${CRIU_VERSION%-*}".orig.tar.*)
    rm -rf "$WORK/build" && mkdir -p "$WORK/build"
    tar -xf "$tarball" -C "$WORK/build" --strip-components=1
    patch -d "$WORK/build" -p1 -s < "$HERE/criu-rfork.patch"
    # Lean: without GnuTLS (rforkd carries CRIU's page-server bytes over its own TLS) and without
    # nftables (rfork never dumps TCP connections, so CRIU never locks the network). Their 14 shared
    # libraries cost 3 ms of dynamic loading every time criu starts, twice per remote fork.
    printf '#!/bin/sh\ncase "$*" in *libnftables*) exit 1 ;; esac\nexec pkg-config "$@"\n' >"$WORK/pkg-config"
    chmod +x "$WORK/pkg-config"
    make -C "$WORK/build" -j"$(nproc)" RUNDIR="$CRIU_RUNDIR" GITID="$CRIU_MARK" NO_GNUTLS=1 \
        PKG_CONFIG="$WORK/pkg-config" criu >"$WORK/build.log" 2>&1 || {
        tail -n 30 "$WORK/build.log" >&2
        echo "setup: CRIU build failed; full log in $WORK/build.log" >&2
        exit 1
    }
    install -m 0755 "$WORK/build/criu/criu" "$CRIU_PREFIX/sbin/criu"
    hash -r
fi
mkdir -p "$CRIU_RUNDIR"

# Post-copy (lazy pages) splices pages through pipes bigger than the default limit.
if [ "$(cat /proc/sys/fs/pipe-max-size)" -lt 4194304 ]; then
    echo 4194304 > /proc/sys/fs/pipe-max-size
fi

criu check >/dev/null 2>&1 || { criu check >&2 || true; echo "setup: 'criu check' failed on this kernel" >&2; exit 1; }
log "ready: $(criu --version | head -n 1)"

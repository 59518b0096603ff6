#!/usr/bin/env bash
# Runs the test suite on another QGIS than the machine's: `make test-qgis VERSION=3.40`.
#
# Usage: qgis_root.sh VERSION REPO [PYTEST ARGUMENTS...]
#
# The QGIS comes from Debian's archive (3.40: trixie, 3.44: sid), in a minimal Debian root made
# with debootstrap and entered with chroot; the machine's own QGIS is not touched. The root is
# built once and kept in QGIS_ROOT_CACHE (default ~/.cache/insar_subsidence), so that later runs
# on the same machine, from any clone, reuse it; it is rebuilt when this script or the
# requirements change. Python packages come from PyPI as wheels fetched on this machine (the
# root's pip cannot verify PyPI's certificate) and go into /opt/pylib, beside Debian's numpy,
# scipy and GDAL, which stay QGIS's own.
#
# Training runs in the torch interpreter, as in QGIS: here the machine's dev venv
# (REPO/.venv/bin/python), run in the machine's root through /host, with /tmp and REPO at the
# same paths in both roots.
set -euo pipefail

version=$1
repo=$(cd "$2" && pwd)
shift 2
case "$version" in
    3.40) suite=trixie ;;
    3.44) suite=sid ;;
    *) echo "QGIS $version: not known here; choose 3.40 (Debian trixie) or 3.44 (Debian sid)." >&2; exit 2 ;;
esac
if [ "$(id -u)" -ne 0 ]; then
    echo "make test-qgis needs root (debootstrap, mount, chroot)." >&2
    exit 1
fi
bash "$repo/tools/ensure_apt.sh" "command -v debootstrap" "debootstrap" debootstrap

cache=${QGIS_ROOT_CACHE:-$HOME/.cache/insar_subsidence}/qgis-$version
root=$cache/root
# What the root is made of: rebuilt when any of it changes.
stamp=$(cat "$0" "$repo/requirements.txt" "$repo/requirements-dev.txt" | sha256sum | cut -c1-16)
# Debian's packages: QGIS with its Python, pip to install the wheels, git and make for make package.
packages="qgis python3-qgis python3-pip python3-skimage git make"
# From PyPI, for the root's Python: the plugin's packages and the test tools (the versions of
# requirements-dev.txt; numpy and scipy are Debian's).
wheels="onnxruntime==1.32.0 onnx==1.23.2 PyKrige==1.7.3 pytest==9.2.0 pytest-xdist==3.8.0 pytest-qgis==5.0.2 dask==2026.8.0 distributed==2026.8.0"

# One run per root at a time: a second run's mounts and unmounts would pull the first's from under it.
mkdir -p "$(dirname "$cache")"
exec 9>"$cache.lock"
if ! flock -n 9; then
    echo "Another make test-qgis VERSION=$version is using $root: waiting for it to end."
    flock 9
fi

mounted=()
unmount() {
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        umount -R -l "${mounted[i]}" 2>/dev/null || true
    done
}
trap unmount EXIT
# A run that was killed leaves its mounts, / among them at root/host: unmount them before anything,
# and never let rm cross into a mounted file system.
# (awk, unlike grep, succeeds when nothing matches, which is the usual case under pipefail.)
unmount_leftovers() {
    findmnt -rn -o TARGET | awk -v prefix="$root/" 'index($0, prefix) == 1' | sort -r | while read -r target; do
        umount -R -l "$target" 2>/dev/null || true
    done
}
unmount_leftovers
mount_into() {  # mount_into TARGET mount-arguments...
    mkdir -p "$1"
    mount "${@:2}" "$1"
    mounted+=("$1")
}

if [ "$(cat "$cache/stamp" 2>/dev/null)" != "$stamp" ]; then
    echo "Building a Debian $suite root with QGIS $version in $cache (about 2 minutes, once)"
    rm -rf --one-file-system "$cache"
    mkdir -p "$cache/wheels"
    start=$SECONDS
    debootstrap --variant=minbase "$suite" "$root" http://deb.debian.org/debian >"$cache/debootstrap.log"
    mount_into "$root/proc" -t proc proc
    # This machine's mirror of sid can be a snapshot whose Release file has passed its Valid-Until.
    chroot "$root" apt-get -o Acquire::Check-Valid-Until=false update -qq
    DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -qq --no-install-recommends $packages \
        >"$cache/apt.log"
    python=$(chroot "$root" python3 -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
    # shellcheck disable=SC2086
    "$repo/.venv/bin/python" -m pip download --quiet --only-binary=:all: --python-version "$python" \
        --implementation cp --abi "cp$python" --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
        --platform any -d "$cache/wheels" $wheels
    cp -r "$cache/wheels" "$root/opt/wheels"
    # shellcheck disable=SC2086
    chroot "$root" python3 -m pip install --quiet --break-system-packages --no-index --find-links /opt/wheels \
        --target /opt/pylib $wheels
    rm -rf "$root"/opt/pylib/numpy* "$root"/opt/pylib/scipy* "$root"/opt/pylib/bin "$root/opt/wheels"
    unmount
    mounted=()
    echo "$stamp" >"$cache/stamp"
    echo "Root built in $((SECONDS - start)) s"
fi

cat >"$root/usr/local/bin/torch-python" <<EOF
#!/bin/sh
# The machine's training interpreter, in the machine's root; without the root's own packages.
PYTHONPATH=\$(printf %s "\$PYTHONPATH" | tr : '\\n' | grep -vx /opt/pylib | paste -sd:)
export PYTHONPATH
exec /usr/sbin/chroot /host "$repo/.venv/bin/python" "\$@"
EOF
chmod +x "$root/usr/local/bin/torch-python"

mount_into "$root/host" --rbind /
mount_into "$root/proc" -t proc proc
mount_into "$root/sys" -t sysfs sysfs
mount_into "$root/dev" --rbind /dev
mount_into "$root/tmp" --bind /tmp
mount_into "$root$repo" --bind "$repo"

chroot "$root" qgis_process --version | head -1
chroot "$root" env -i HOME=/root PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 PYTHONPATH=/opt/pylib \
    QT_QPA_PLATFORM=offscreen SUBSIDENCE_TORCH_PYTHON=/usr/local/bin/torch-python \
    bash -c 'cd "$0" && python3 -m pytest -p no:cacheprovider "$@"' "$repo" "$@"

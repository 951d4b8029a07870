#!/usr/bin/env bash
# Run a command with a Vulkan device available. If no Vulkan driver is
# installed, install Mesa's software rasteriser (lavapipe) and the loader
# first (Debian/Ubuntu; needs root or sudo). A machine with a real GPU driver
# is left alone. Usage: bash tools/with-vulkan.sh cargo test
#
# Opt-in: HOPFIELD_LAVAPIPE=backports runs the command on lavapipe from
# Debian bookworm-backports (Mesa 25) instead of the system's Mesa, without
# installing anything system-wide: the packages are downloaded with
# `apt-get download` and unpacked with `dpkg -x` into a private directory
# (HOPFIELD_LAVAPIPE_DIR, default ~/.cache/hopfield-gpu/lavapipe-bpo), and
# the loader is pointed at its driver (VK_DRIVER_FILES, LD_LIBRARY_PATH).
# Other programs on the machine keep the system's Mesa. It needs the
# Debian archive once (the download); later runs reuse the directory.
# Whether CI should use it is not measured yet: BENCHMARKS.md (issue 9).
set -euo pipefail

# A loader and at least one ICD manifest in any of the loader's standard
# folders. (One `ls` over all three globs fails when any folder is absent,
# which sent machines with a driver into apt-get on every call.) Not
# `grep -q`: it exits at the first match, ldconfig can then die of SIGPIPE,
# and pipefail reads that as "no loader" (about 1 call in 10 here).
have_vulkan() {
    ldconfig -p 2>/dev/null | grep 'libvulkan\.so\.1' >/dev/null || return 1
    local f
    for f in /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json /usr/local/share/vulkan/icd.d/*.json; do
        [ -f "$f" ] && return 0
    done
    return 1
}

if ! have_vulkan; then
    echo "with-vulkan: no Vulkan driver found; installing lavapipe (mesa-vulkan-drivers, libvulkan1)" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends mesa-vulkan-drivers libvulkan1 >/dev/null
fi

case "${HOPFIELD_LAVAPIPE:-system}" in
system) ;;
backports)
    dir="${HOPFIELD_LAVAPIPE_DIR:-$HOME/.cache/hopfield-gpu/lavapipe-bpo}"
    icd="$dir/lvp_icd.json"
    if [ ! -f "$icd" ]; then
        echo "with-vulkan: fetching lavapipe from bookworm-backports into $dir" >&2
        mkdir -p "$dir/apt/lists/partial" "$dir/apt/archives/partial" "$dir/root"
        echo "deb http://deb.debian.org/debian bookworm-backports main" >"$dir/apt/sources.list"
        apt_opts=(-o "Dir::Etc::sourcelist=$dir/apt/sources.list" -o Dir::Etc::sourceparts=-
            -o "Dir::State::lists=$dir/apt/lists" -o "Dir::Cache::archives=$dir/apt/archives")
        apt-get "${apt_opts[@]}" update -qq
        # Mesa 25 from backports needs the newer libdrm of backports; the
        # rest (LLVM 15, libc, X libraries) is the system's.
        # (Downloads land in the current directory; apt's sandbox user may
        # not write there, which only costs a warning.)
        (cd "$dir/apt" && apt-get "${apt_opts[@]}" download -qq \
            mesa-vulkan-drivers/bookworm-backports libdrm2/bookworm-backports \
            libdrm-amdgpu1/bookworm-backports)
        for deb in "$dir"/apt/*.deb; do
            dpkg -x "$deb" "$dir/root"
        done
        lib="$dir/root/usr/lib/x86_64-linux-gnu"
        [ -f "$lib/libvulkan_lvp.so" ] || { echo "with-vulkan: no libvulkan_lvp.so in the backports packages" >&2; exit 1; }
        manifest=$(ls "$dir"/root/usr/share/vulkan/icd.d/lvp_icd*.json | head -n 1)
        sed "s|\"library_path\": *\"[^\"]*\"|\"library_path\": \"$lib/libvulkan_lvp.so\"|" "$manifest" >"$icd.tmp"
        mv "$icd.tmp" "$icd"
    fi
    export VK_DRIVER_FILES="$icd" VK_ICD_FILENAMES="$icd"
    export LD_LIBRARY_PATH="$dir/root/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    ;;
*)
    echo "with-vulkan: HOPFIELD_LAVAPIPE=${HOPFIELD_LAVAPIPE} is neither system nor backports" >&2
    exit 2
    ;;
esac

# The Vulkan loader warns on every start when this is unset (headless machines).
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
exec "$@"

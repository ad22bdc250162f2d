#!/usr/bin/env bash
# System packages aapt-world needs beyond PyPI (Debian/Ubuntu): software OpenGL for MuJoCo's
# offscreen renderer (MUJOCO_GL=osmesa) and ffmpeg-free video (imageio-ffmpeg ships its own).
set -euo pipefail
PACKAGES=(libosmesa6 libgl1 libglib2.0-0)
missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "warning: no apt-get; install ${missing[*]} with your package manager" >&2
  exit 0
fi
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "installing system packages: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"

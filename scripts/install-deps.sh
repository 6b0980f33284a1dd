#!/usr/bin/env bash
# Installs the Debian packages zygote needs, when they are missing.
# QEMU comes from bookworm-backports (>= 9.0 is required for live migration under
# TCG); that suite is added using the mirror URI the machine's apt sources already
# name, never a hard-coded host.
set -euo pipefail

# fonts-dejavu-core: the TrueType font `zygote bench` draws its PNG charts' text with.
# docker-registry, umoci, skopeo, apache2-utils (htpasswd): the OCI tests' local
# registry and the tools that make and push their images (tests/e2e_oci.rs).
need_pkgs=(qemu-system-x86 qemu-utils cpio busybox-static debootstrap e2fsprogs zstd fonts-dejavu-core tmux ca-certificates nftables iproute2 iperf3 docker-registry umoci skopeo apache2-utils)
missing=()
for p in "${need_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done

qemu_ok() {
  command -v qemu-system-x86_64 >/dev/null 2>&1 || return 1
  local v
  v=$(qemu-system-x86_64 --version | sed -n 's/.*version \([0-9]*\)\..*/\1/p' | head -1)
  [ -n "$v" ] && [ "$v" -ge 9 ]
}

if [ ${#missing[@]} -eq 0 ] && qemu_ok; then
  echo "install-deps: all Debian packages present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages (${missing[*]}); run as root to install them" >&2
  exit 1
fi

. /etc/os-release
codename=${VERSION_CODENAME:-bookworm}
bpo_list=/etc/apt/sources.list.d/zygote-backports.sources
if [ "$codename" = bookworm ] && ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
  # Reuse the first Debian mirror URI already configured on this machine.
  uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -1 || true)
  if [ -z "$uri" ]; then
    uri=$(grep -hs '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | grep -v security | head -1 || true)
  fi
  if [ -z "$uri" ]; then
    echo "install-deps: no Debian mirror URI found in the apt sources; add bookworm-backports by hand" >&2
    exit 1
  fi
  cat > "$bpo_list" <<SRC
Types: deb
URIs: $uri
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  echo "install-deps: added bookworm-backports from $uri"
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
if [ "$codename" = bookworm ]; then
  apt-get install -y -qq -t bookworm-backports qemu-system-x86 qemu-utils >/dev/null
fi
apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
qemu_ok || { echo "install-deps: QEMU >= 9.0 could not be installed ($(qemu-system-x86_64 --version | head -1))" >&2; exit 1; }
echo "install-deps: $(qemu-system-x86_64 --version | head -1)"

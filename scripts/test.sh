#!/usr/bin/env bash
# Install everything the tests need (Chromium from Debian, Python packages) and run them.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq chromium chromium-driver >/dev/null
fi
python3 -m pip install -q -r requirements-dev.txt
export HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"
python3 -m pytest "$@"

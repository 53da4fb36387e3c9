#!/usr/bin/env bash
# The README's test command, which CI runs: installs Chromium from Debian when missing, makes a
# virtual environment of its own (.venv/, or $QA_VENV), installs the pinned requirements into it,
# and runs the tests from it, so a package missing from the requirements fails here too.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq chromium chromium-driver >/dev/null
fi
venv="${QA_VENV:-.venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r requirements-dev.txt
"$venv/bin/python" -m pip check
export HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"
exec "$venv/bin/python" -m pytest "$@"

#!/usr/bin/env bash
# One-time (idempotent) setup on a fresh Debian machine: the Debian packages in packages.txt that are
# missing, a virtual environment in .venv, and the pinned Python requirements. Re-running is cheap:
# apt is skipped when nothing is missing, pip when requirements*.txt did not change.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for pkg in $(grep -vE '^\s*(#|$)' packages.txt "$@" 2>/dev/null | sed 's/.*://'); do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  echo "setup: installing Debian packages: ${missing[*]}"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
want=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -c1-16)
have=$(cat .venv/.requirements-hash 2>/dev/null || true)
if [ "$want" != "$have" ]; then
  echo "setup: installing Python requirements into .venv"
  # This machine's pip config names local mirrors that may be absent; hide only those warnings.
  quiet() { "$@" 2>&1 | { grep -v '^WARNING: Location' || true; }; }
  quiet .venv/bin/python -m pip install -q --upgrade pip
  quiet .venv/bin/python -m pip install -q -r requirements-dev.txt
  echo "$want" > .venv/.requirements-hash
fi

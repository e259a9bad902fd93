#!/usr/bin/env bash
# Installs Debian's Chromium for the review page's browser tests (tests/test_review_browser.py, test_review_e2e.py)
# when it is missing and we may install it (root, or password-less sudo). Never fails the caller: without Chromium
# the browser tests skip with a clear reason. The tests drive it with the `playwright` Python package (test extras);
# Playwright's own browser download (`playwright install`) is not used.
# Example: bash scripts/install_browser.sh && chromium --version
set -u
have_chromium() { command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; }
if have_chromium; then exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_browser: no apt-get here; install Chromium yourself (or set PTT_CHROMIUM); browser tests will skip" >&2
  exit 0
fi
if [ "$(id -u)" = "0" ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo -n"
else
  echo "install_browser: not root and no password-less sudo; run 'sudo apt-get install chromium'; browser tests will skip" >&2
  exit 0
fi
echo "install_browser: installing Debian's chromium with apt-get (a few minutes)..." >&2
if $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; then
  have_chromium && echo "install_browser: $(chromium --version 2>/dev/null || echo chromium installed)" >&2
else
  echo "install_browser: could not install chromium; browser tests will skip" >&2
fi
exit 0

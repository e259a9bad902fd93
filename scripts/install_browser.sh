#!/usr/bin/env bash
# Installs Debian's Chromium for the review page's browser tests when it is missing and we may install it.
# Never fails the caller: without Chromium the browser tests skip with a clear reason.
set -u
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install_browser: not root or no apt-get; browser tests will skip" >&2; exit 0
fi
( apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null ) \
  || echo "install_browser: could not install chromium; browser tests will skip" >&2
exit 0

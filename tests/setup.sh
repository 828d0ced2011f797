#!/usr/bin/env bash
# Installs what handoff's tests need, from Debian packages. Idempotent; run as root.
#   postfix            the MTA the end-to-end tests drive (a private instance per test)
#   sasl2-bin, libsasl2-modules   SMTP AUTH for the "authenticated as a disabled account" tests
#   miltertest         OpenDKIM's milter test driver
#   swaks              a one-off SMTP client, handy when debugging the lab
#   redis-server       the shared auto-reply memory
#   systemd            systemd-analyze, to verify deploy/systemd/handoff.service
#   strace             fault injection: makes the running daemon's fdatasync fail (tests/faults.rs)
#   dovecot-imapd      the IMAP server of the import and restore tests (a private instance per
#                      test, tests/support/dovecot.rs; the system one is never started)
#   chromium, chromium-driver   the archive console's browser tests (WebDriver; tests/console_browser.rs)
#   openssl            test certificates: the archive console's HTTPS test (tests/console.rs) and
#                      the private Dovecot's test CA
# and, from crates.io, cargo-deb (builds the Debian package the deployment test installs).
set -euo pipefail

packages=(postfix sasl2-bin libsasl2-modules miltertest swaks redis-server systemd strace dovecot-imapd openssl chromium chromium-driver)

# The newest cargo-deb known to build with the project's Rust (1.95).
cargo_deb_version=3.8.0

missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
	if [ "$(id -u)" -ne 0 ]; then
		echo "tests/setup.sh: missing packages: ${missing[*]}; run as root (or install them)" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	# The system instance is never used: labs bring their whole configuration and work without
	# /etc/postfix/main.cf, so Postfix need not configure itself.
	echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! cargo deb --version 2>/dev/null | grep -q "$cargo_deb_version"; then
	echo "tests/setup.sh: installing cargo-deb $cargo_deb_version (a few minutes)" >&2
	cargo install cargo-deb --locked --version "$cargo_deb_version" --quiet
fi

# The tests run private Postfix instances; the system one is not needed.
if command -v postfix >/dev/null && postfix status >/dev/null 2>&1; then
	postfix stop >/dev/null 2>&1 || true
fi
# Nor the system Dovecot (its package starts it where it can): tests bring their own.
if [ -f /run/dovecot/master.pid ] && command -v doveadm >/dev/null; then
	doveadm stop >/dev/null 2>&1 || true
fi
echo "tests/setup.sh: ${#packages[@]} packages and cargo-deb present"

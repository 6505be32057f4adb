# shellcheck shell=sh
# cw-ap-lib.sh: shared functions of the civicwifi access-point agent
# (installed as /usr/lib/civicwifi/cw-ap-lib.sh; sourced, never run).
#
# Needs what OpenWrt ships: busybox ash, uci, wifi, ubus, iwinfo and
# uclient-fetch (with --header: OpenWrt 23.05 or later). No jsonfilter,
# jshn or openssl: requests are JSON built here with escaping, answers are
# the controller's line format (key=value, see README.md), read without eval.
#
# Secrets (the enrollment token, the AP's secret) are read from files and
# never written to the log or stdout.

CW_DIR=${CW_DIR:-/etc/civicwifi}
CW_RELEASE_FILE=${CW_RELEASE_FILE:-/etc/openwrt_release}
CW_SYSINFO_DIR=${CW_SYSINFO_DIR:-/tmp/sysinfo}
CW_TAG=${CW_TAG:-cw-ap}
CW_BOOT_ID_FILE=${CW_BOOT_ID_FILE:-/proc/sys/kernel/random/boot_id}

cw_log() { # level message...
	_lvl=$1
	shift
	logger -t "$CW_TAG" -p "daemon.$_lvl" -- "$*"
}

cw_die() {
	cw_log err "$*"
	echo "$CW_TAG: $*" >&2
	exit 1
}

# cw_json_str STRING: STRING as a JSON string literal. Control characters
# are dropped, backslash and double quote escaped.
cw_json_str() {
	printf '"%s"' "$(printf '%s' "$1" | tr -d '\000-\037\177' | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"
}

# cw_int VALUE: VALUE if it is a non-negative decimal integer, else 0.
cw_int() {
	case $1 in
	'' | *[!0-9]*) echo 0 ;;
	*) echo "$1" ;;
	esac
}

cw_uci_get() { uci -q get "$1" 2>/dev/null; }

# cw_load_config sets CW_URL, CW_CA, CW_UPLINK and CW_MAC from
# /etc/config/civicwifi (section main).
cw_load_config() {
	CW_URL=$(cw_uci_get civicwifi.main.url)
	CW_CA=$(cw_uci_get civicwifi.main.ca)
	CW_UPLINK=$(cw_uci_get civicwifi.main.uplink)
	CW_UPLINK=${CW_UPLINK:-eth0}
	CW_MAC=$(cw_uci_get civicwifi.main.mac)
	if [ -z "$CW_MAC" ] && [ -r "/sys/class/net/$CW_UPLINK/address" ]; then
		CW_MAC=$(cat "/sys/class/net/$CW_UPLINK/address")
	fi
	[ -n "$CW_URL" ] || cw_die "civicwifi.main.url is not set"
	case $CW_URL in
	https://* | http://127.* | http://\[::1\]*) ;;
	*) cw_die "civicwifi.main.url $CW_URL: want https:// (the bearer token must not cross the network in clear)" ;;
	esac
	case $CW_MAC in
	[0-9a-fA-F][0-9a-fA-F]:[0-9a-fA-F][0-9a-fA-F]:[0-9a-fA-F][0-9a-fA-F]:[0-9a-fA-F][0-9a-fA-F]:[0-9a-fA-F][0-9a-fA-F]:[0-9a-fA-F][0-9a-fA-F]) ;;
	*) cw_die "no MAC address: set civicwifi.main.mac or civicwifi.main.uplink" ;;
	esac
	mkdir -p "$CW_DIR/state"
}

cw_firmware() {
	[ -r "$CW_RELEASE_FILE" ] || {
		echo unknown
		return
	}
	sed -n "s/^DISTRIB_DESCRIPTION=['\"]\(.*\)['\"]\$/\1/p" "$CW_RELEASE_FILE" | head -n 1
}

cw_model() {
	if [ -r "$CW_SYSINFO_DIR/model" ]; then
		head -n 1 "$CW_SYSINFO_DIR/model"
	else
		echo unknown
	fi
}

cw_uptime() {
	_up=$(cut -d. -f1 /proc/uptime)
	cw_int "$_up"
}

cw_boot_id() { cat "$CW_BOOT_ID_FILE" 2>/dev/null || echo none; }

# cw_post PATH BODYFILE OUTFILE TOKENFILE: POST the JSON in BODYFILE to the
# controller with the token in TOKENFILE as bearer token; the answer goes to
# OUTFILE. Returns 0 on a 2xx answer; sets CW_HTTP_STATUS (000: no answer).
cw_post() {
	_tok=$(cat "$4") || return 1
	_err="$CW_DIR/state/http.err"
	rm -f "$3"
	set -- -T 15 --header="Authorization: Bearer $_tok" --header="Accept: text/plain" \
		--header="Content-Type: application/json" --post-file="$2" -O "$3" "$CW_URL$1"
	unset _tok
	if [ -n "$CW_CA" ]; then
		set -- --ca-certificate="$CW_CA" "$@"
	fi
	# No -q: "HTTP error NNN" on stderr is how uclient-fetch tells the status.
	if uclient-fetch "$@" 2>"$_err"; then
		CW_HTTP_STATUS=200
		return 0
	fi
	CW_HTTP_STATUS=$(sed -n 's/^HTTP error \([0-9][0-9][0-9]\).*/\1/p' "$_err" | head -n 1)
	CW_HTTP_STATUS=${CW_HTTP_STATUS:-000}
	return 1
}

# cw_answer_get FILE KEY: the value of the first KEY= line of FILE.
cw_answer_get() {
	sed -n "s/^$2=//p" "$1" | head -n 1
}

#!/usr/bin/env bash
# Installs the fabpass agent on a machine's Raspberry Pi. See docs/deploy.md.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: sudo deploy/install.sh [options]

Installs fabpass from the checkout this script is in, as the systemd service
fabpass.service running as the system user fabpass (in the gpio, spi and
dialout groups). Safe to run again: to upgrade, to rotate the broker password,
or after a failed run.

  /opt/fabpass                  a venv (with Debian's packages: python3-lgpio)
  /opt/fabpass/libexec/relay-off  drives the relay off after the agent stops
  /etc/fabpass/agent.toml       the machine config (kept if it exists)
  /etc/fabpass/mqtt.password    the broker password (--broker-password-file)
  /etc/fabpass/ca.crt           the lab CA (--broker-ca-file)
  /etc/systemd/system/fabpass.service
  /var/lib/fabpass              the member cache and the event outbox

The machine config, written when there is none (or with --force):
  --config FILE               use this agent.toml, or write one from these:
  --machine-id ID             the machine's id, e.g. laser-1 (required)
  --name TEXT                 a readable name, e.g. "Laser cutter (Trotec)"
  --induction NAME            the induction a member needs (required)
  --reader TYPE               mfrc522 (default), rdm6300, head or simulated
  --reader-port PORT          the serial port of an rdm6300 or head reader
                              (default /dev/serial0)
  --relay-pin N               the relay's BCM pin (default 17)
  --active-low | --active-high  how the relay board switches (one is required:
                              most boards are active-low, IN low = relay on)
  --broker URL                mqtt://host[:port] or mqtts://host[:port]; the
                              username is the machine id
  --force                     replace an existing agent.toml (kept as agent.toml.bak)

Always applied:
  --broker-password-file FILE the machine's broker password (from add-machine)
  --broker-ca-file FILE       the lab CA certificate, for an mqtts:// broker

Other options:
  --enable-spi                turn SPI on (raspi-config, or config.txt), for an MFRC522
  --no-start                  enable the service but do not (re)start it
  --root DIR                  install under DIR instead of / (tests, images): system
                              commands get DIR as their root, nothing is started
                              (also FABPASS_ROOT)
  --dry-run                   print what would be done and written; change nothing
  -h, --help                  this help
EOF
}

die() { echo "install.sh: $*" >&2; exit 2; }
fail() { echo "install.sh: $*" >&2; exit 1; }
say() { echo "install.sh: $*" >&2; }

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
root=${FABPASS_ROOT:-/}
venv_python=${FABPASS_PYTHON:-python3}
dry_run=false force=false enable_spi=false start=true
config_file='' machine_id='' machine_name='' induction='' reader=mfrc522 reader_port='' relay_pin=17
active_high=''
broker='' password_file='' ca_file=''
generation_options=()

need() { [ "$2" -ge 2 ] || die "$1 needs a value (see --help)"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --config) need "$1" $#; config_file=$2; shift 2 ;;
        --machine-id) need "$1" $#; machine_id=$2; generation_options+=("$1"); shift 2 ;;
        --name) need "$1" $#; machine_name=$2; generation_options+=("$1"); shift 2 ;;
        --induction) need "$1" $#; induction=$2; generation_options+=("$1"); shift 2 ;;
        --reader) need "$1" $#; reader=$2; generation_options+=("$1"); shift 2 ;;
        --reader-port) need "$1" $#; reader_port=$2; generation_options+=("$1"); shift 2 ;;
        --relay-pin) need "$1" $#; relay_pin=$2; generation_options+=("$1"); shift 2 ;;
        --active-low) active_high=false; generation_options+=("$1"); shift ;;
        --active-high) active_high=true; generation_options+=("$1"); shift ;;
        --broker) need "$1" $#; broker=$2; generation_options+=("$1"); shift 2 ;;
        --broker-password-file) need "$1" $#; password_file=$2; shift 2 ;;
        --broker-ca-file) need "$1" $#; ca_file=$2; shift 2 ;;
        --force) force=true; shift ;;
        --enable-spi) enable_spi=true; shift ;;
        --no-start) start=false; shift ;;
        --root) need "$1" $#; root=$2; shift 2 ;;
        --dry-run) dry_run=true; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

# --- checks, before anything changes ----------------------------------------

[[ "$root" == /* ]] || die "--root $root: must be an absolute path"
[ -d "$root" ] || die "--root $root: no such directory"
grep -qs '^name = "fabpass"' "$src/pyproject.toml" || die "$src is not a fabpass checkout (run deploy/install.sh from one)"
if [ -n "$config_file" ]; then
    [ ${#generation_options[@]} -eq 0 ] || die "--config FILE or ${generation_options[0]} and the like, not both"
    [ -r "$config_file" ] || die "--config $config_file: cannot read it"
fi
if [ -n "$machine_id" ] && ! [[ "$machine_id" =~ ^[a-z0-9][a-z0-9-]*$ ]]; then
    die "--machine-id '$machine_id': must match [a-z0-9][a-z0-9-]* (it is used in MQTT topics)"
fi
if [ -n "$induction" ] && ! [[ "$induction" =~ ^[A-Za-z0-9_.-]+$ ]]; then
    die "--induction '$induction': letters, digits, '_', '.' and '-' only"
fi
[[ "$machine_name" != *[\"\\[:cntrl:]]* ]] || die "--name: no quotes, backslashes or control characters, please"
case "$reader" in mfrc522|rdm6300|head|simulated) ;; *) die "--reader '$reader': one of mfrc522, rdm6300, head, simulated" ;; esac
[[ "$reader_port" =~ ^[A-Za-z0-9_./:-]*$ ]] || die "--reader-port '$reader_port': a device path such as /dev/serial0"
if ! [[ "$relay_pin" =~ ^[0-9]+$ ]] || [ "$relay_pin" -gt 27 ]; then
    die "--relay-pin '$relay_pin': a BCM GPIO number, 0 to 27"
fi
if [ -n "$broker" ]; then
    [[ "$broker" =~ ^mqtts?://[^[:space:]\"\\]+$ ]] || die "--broker '$broker': mqtt://host[:port] or mqtts://host[:port]"
    [[ ! "$broker" =~ ^mqtts?://[^/@]*:[^/@]*@ ]] \
        || die "--broker: no password in the URL (it would be readable in agent.toml); use --broker-password-file"
fi
[ -z "$password_file" ] || [ -r "$password_file" ] || die "--broker-password-file $password_file: cannot read it"
[ -z "$ca_file" ] || [ -r "$ca_file" ] || die "--broker-ca-file $ca_file: cannot read it"
if ! $dry_run && [ "$root" = / ] && [ "$(id -u)" -ne 0 ]; then
    fail "run as root: sudo $0 …  (or --dry-run to see what it would do)"
fi

at() { printf '%s%s' "${root%/}" "$1"; }  # a path of the installed system, under --root
root_opt=()
[ "$root" = / ] || root_opt=(--root "$root")

# The machine config to write, if any: made and checked before anything changes.
config=$(at /etc/fabpass/agent.toml)
new_config() {
    if [ -n "$config_file" ]; then cat "$config_file"; return; fi
    local missing=()
    [ -n "$machine_id" ] || missing+=(--machine-id)
    [ -n "$induction" ] || missing+=(--induction)
    [ -n "$active_high" ] || missing+=("--active-low or --active-high")
    [ ${#missing[@]} -eq 0 ] || die "no $config yet: give ${missing[*]} (or --config FILE)"
    local name
    name=$(printf '%s' "${machine_name:-$machine_id}" | sed 's/[&|\\]/\\&/g')  # literal in sed
    local port_line="# port = \"/dev/serial0\"     # rdm6300 and head: the serial device"
    case "$reader" in rdm6300|head) port_line="port = \"${reader_port:-/dev/serial0}\"" ;; esac
    sed -e "s|@MACHINE_ID@|$machine_id|" -e "s|@MACHINE_NAME@|$name|" \
        -e "s|@INDUCTION@|$induction|" -e "s|@READER@|$reader|" -e "s|^@READER_PORT@$|$port_line|" \
        -e "s|@RELAY_PIN@|$relay_pin|" -e "s|@ACTIVE_HIGH@|$active_high|" "$src/deploy/agent.toml.template"
    if [ -n "$broker" ]; then
        printf '\n[mqtt]\nurl = "%s"\nusername = "%s"\n' "$broker" "$machine_id"
        [ -z "$password_file" ] || echo 'password_file = "/etc/fabpass/mqtt.password"'
        [ -z "$ca_file" ] || echo 'ca_file = "/etc/fabpass/ca.crt"'
    fi
}
# check_config PYTHON: the agent's own loader on $text, so that a config that
# would not start is refused. Status 1 with the problem on stdout; 3 when this
# Python lacks one of fabpass's dependencies (before the venv exists).
check_config() {
    PYTHONPATH="$src" "$1" -c '
import sys
try:
    from agent.config import ConfigError, parse
    parse(sys.stdin.read(), "/etc/fabpass/agent.toml")
except ConfigError as err:
    print(err)
    sys.exit(1)
except ImportError as err:
    print(err)
    sys.exit(3)
' <<<"$text" 2>&1
}
venv=$(at /opt/fabpass)
text='' config_checked=false
if [ ! -e "$config" ] || $force; then
    text=$(new_config) || exit $?
    checker=python3
    [ ! -x "$venv/bin/python" ] || checker=$venv/bin/python
    status=0
    problem=$(check_config "$checker") || status=$?
    case $status in
        0) config_checked=true ;;
        3) say "the config is checked once fabpass is installed ($problem here)" ;;
        *) die "the config would not load: $problem" ;;
    esac
fi

# --- doing, or saying what would be done --------------------------------------

run() {
    local line
    printf -v line '%q ' "$@"
    if $dry_run; then echo "would run: ${line% }"; else echo "+ ${line% }" >&2; "$@"; fi
}

# put MODE OWNER DEST [show|secret]: install stdin as DEST; a dry run prints
# the content with "show", hides it with "secret". Sets $changed.
changed=false
put() {
    local mode=$1 owner=$2 dest=$3 what=${4:-} tmp
    tmp=$(mktemp)
    cat >"$tmp"
    if [ -f "$dest" ] && cmp -s "$tmp" "$dest"; then
        changed=false
        say "$dest: unchanged"
    elif $dry_run; then
        changed=true
        echo "would write $dest (mode $mode, owner $owner)"
        case "$what" in
            show) sed 's/^/    /' "$tmp" ;;
            secret) echo "    (a secret, $(wc -c <"$tmp") bytes)" ;;
        esac
    else
        changed=true
        mkdir -p "$(dirname "$dest")"
        chmod "$mode" "$tmp"
        run chown "$owner" "$tmp"
        mv "$tmp" "$dest"
        say "wrote $dest"
    fi
    rm -f "$tmp"
}

# --- 1. Debian packages ---------------------------------------------------------

packages=(python3-venv python3-lgpio)
if [ "$root" = / ]; then
    missing=()
    for package in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        run apt-get update -qq
        run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    fi
else
    say "--root: not installing Debian packages; the system needs ${packages[*]}"
fi

# --- 2. the fabpass user ----------------------------------------------------------

if grep -qs '^fabpass:' "$(at /etc/passwd)"; then
    say "user fabpass exists"
else
    run useradd "${root_opt[@]}" --system --user-group --home-dir /var/lib/fabpass --no-create-home \
        --shell /usr/sbin/nologin --comment "fabpass machine agent" fabpass
fi
for group in gpio spi dialout; do
    line=$(grep -s "^$group:" "$(at /etc/group)" || true)
    if [ -z "$line" ]; then
        say "warning: no group $group on this system (not Raspberry Pi OS?): fabpass is not in it"
    elif [[ ",${line##*:}," != *,fabpass,* ]]; then
        run usermod "${root_opt[@]}" --append --groups "$group" fabpass
    fi
done

# --- 3. the venv and fabpass ------------------------------------------------------

# --system-site-packages: Debian's python3-lgpio serves gpiozero (Pi 5).
[ -x "$venv/bin/python" ] || run "$venv_python" -m venv --system-site-packages "$venv"
run "$venv/bin/pip" install --quiet --disable-pip-version-check --upgrade "${src}[pi]"
put 0755 root:root "$(at /opt/fabpass/libexec/relay-off)" <"$src/deploy/relay-off"
if [ -n "$text" ] && ! $config_checked; then
    if $dry_run; then
        echo "would check the config with the installed fabpass"
    else
        problem=$(check_config "$venv/bin/python") || die "the config would not load: $problem"
    fi
fi

# --- 4. the machine config --------------------------------------------------------

if [ -z "$text" ]; then
    say "keeping $config${generation_options[0]:+ (${generation_options[*]} ignored: --force replaces it)}"
else
    if [ -e "$config" ] && [ "$(cat "$config")" != "$text" ]; then run cp -p "$config" "$config.bak"; fi
    put 0640 root:fabpass "$config" show <<<"$text"
fi
[ -z "$password_file" ] || put 0640 root:fabpass "$(at /etc/fabpass/mqtt.password)" secret <"$password_file"
[ -z "$ca_file" ] || put 0644 root:root "$(at /etc/fabpass/ca.crt)" <"$ca_file"

# --- 5. SPI, for a reader on the Pi's own SPI bus -------------------------------

if $enable_spi; then
    if [ "$root" = / ] && command -v raspi-config >/dev/null; then
        run raspi-config nonint do_spi 0
    else
        boot=$(at /boot/firmware/config.txt)
        [ -e "$boot" ] || boot=$(at /boot/config.txt)
        [ -e "$boot" ] || fail "--enable-spi: neither $(at /boot/firmware/config.txt) nor $boot exists"
        if grep -qx 'dtparam=spi=on' "$boot"; then
            say "SPI already on in $boot"
        elif $dry_run; then
            echo "would append to $boot: [all] dtparam=spi=on"
        else
            printf '\n[all]\ndtparam=spi=on\n' >>"$boot"
            say "SPI turned on in $boot"
        fi
    fi
    [ "$root" != / ] || compgen -G '/dev/spidev*' >/dev/null || say "reboot for SPI to take effect (no /dev/spidev* yet)"
fi

# --- 6. the service -------------------------------------------------------------

put 0644 root:root "$(at /etc/systemd/system/fabpass.service)" <"$src/deploy/fabpass.service"
if [ "$root" = / ]; then
    ! $changed || run systemctl daemon-reload
    run systemctl enable fabpass.service
    if $start; then
        run systemctl restart fabpass.service
        $dry_run || say "started: see it with  systemctl status fabpass  and  journalctl -u fabpass -f"
    fi
    say "check the Pi with: sudo -u fabpass /opt/fabpass/bin/fabpass doctor --config /etc/fabpass/agent.toml"
else
    run systemctl --root="$root" enable fabpass.service
fi

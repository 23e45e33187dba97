#!/bin/sh
# Copies the reader-head firmware onto a Pico running MicroPython, then resets it.
# Usage: firmware/pico/install.sh [DEVICE]   (default: the first board mpremote finds)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
connect=${1:+connect $1}
# shellcheck disable=SC2086
mpremote $connect \
    cp "$here/../../agent/hardware/headproto.py" :headproto.py + \
    cp "$here/iso14443a.py" "$here/rc522.py" "$here/indicator.py" "$here/headloop.py" : + \
    cp "$here/main.py" :main.py + \
    reset

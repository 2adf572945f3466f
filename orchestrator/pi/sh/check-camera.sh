#!/bin/sh
# piorch bootstrap step "camera": which camera stack this Pi has and whether it sees a camera. It changes
# nothing (enabling a camera means editing config.txt and rebooting): it says what to enable. Prints one
# line for piorch:
#   piorch-step camera already|failed DETAIL
set -u
step=camera
say() { echo "piorch-step $step $1 $2"; }

config=/boot/firmware/config.txt  # Bookworm and later
[ -f "$config" ] || config=/boot/config.txt

video=""
for tool in rpicam-vid libcamera-vid; do
    if command -v "$tool" >/dev/null 2>&1; then video=$tool; break; fi
done

if [ -n "$video" ]; then
    # libcamera stack: rpicam-hello (libcamera-hello before rpicam-apps 1.4) lists the sensors it sees,
    # one line each: "0 : imx219 [3280x2464 10-bit RGGB] (/base/...)".
    hello=""
    for tool in rpicam-hello libcamera-hello; do
        if command -v "$tool" >/dev/null 2>&1; then hello=$tool; break; fi
    done
    if [ -z "$hello" ]; then
        say failed "libcamera stack ($video) without rpicam-hello to list cameras: sudo apt install rpicam-apps"
        exit 1
    fi
    cameras=$("$hello" --list-cameras 2>&1 | sed -n 's/^ *[0-9][0-9]* *: *\([^ ]*\).*/\1/p' | tr '\n' ' ')
    cameras=${cameras% }
    if [ -n "$cameras" ]; then
        say already "libcamera stack ($video), camera: $cameras"
        exit 0
    fi
    say failed "libcamera stack ($video) but no camera detected: check the ribbon cable at both ends, keep camera_auto_detect=1 in $config (or add dtoverlay=<sensor> for a module it does not detect), then reboot"
    exit 1
fi

if command -v raspivid >/dev/null 2>&1; then
    # Legacy (MMAL) stack: the firmware says "supported=1 detected=1".
    if ! command -v vcgencmd >/dev/null 2>&1; then
        say failed "legacy stack (raspivid) but no vcgencmd to ask the firmware: sudo apt install libraspberrypi-bin"
        exit 1
    fi
    answer=$(vcgencmd get_camera 2>&1 | head -n 1)
    case "$answer" in
        *"supported=1 detected=1"*) say already "legacy stack (raspivid), camera detected" ;;
        *"supported=0"*) say failed "legacy stack (raspivid) but its camera interface is off: sudo raspi-config nonint do_legacy 0 (Bullseye) or do_camera 0 (Buster), then reboot"; exit 1 ;;
        *"detected=0"*) say failed "legacy stack (raspivid) but no camera detected: check the ribbon cable at both ends, then reboot"; exit 1 ;;
        *) say failed "legacy stack (raspivid); vcgencmd get_camera said: $answer (is the user in the video group?)"; exit 1 ;;
    esac
    exit 0
fi

say failed "no camera tool: sudo apt install rpicam-apps (Bookworm; libcamera-apps on Bullseye)"
exit 1

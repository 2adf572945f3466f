#!/bin/sh
# Regenerates orchestrator/sim/clip.h264, the picture the camera simulator loops forever.
#
# What the simulator needs from the clip, and which flag gives it:
#   - raw Annex B H.264 (start codes, no container):          -f h264
#   - an IDR every second at 25 fps, never elsewhere:          keyint=25:min-keyint=25:scenecut=0
#   - SPS+PPS in front of every IDR, like `raspivid -ih`:      repeat-headers=1
#     (the simulator strips the repeats again when the caller did not ask for inline headers)
#   - one slice per frame, so one VCL NAL = one frame:         -threads 1 (no sliced threads)
#   - no B-frames, so decode order = output order like the Pi: baseline profile (bframes=0 to be explicit)
#   - no x264 "options used" SEI, which a Pi never sends:      -bsf:v filter_units=remove_types=6
#   - small enough to ship in the package (~86 KB here):       640x360, 2 s, crf 30
# testsrc2 has moving parts, so a decoded frame differs from its neighbours.
#
# The bytes depend on the x264 build; made with ffmpeg 5.1.x / libx264 (Debian 12). Any build that keeps
# the NAL layout above works: tests check the layout, not the hash of this file.
set -eu
cd "$(dirname "$0")"
ffmpeg -hide_banner -loglevel error -y \
    -f lavfi -i "testsrc2=size=640x360:rate=25:duration=2" \
    -c:v libx264 -profile:v baseline -level 3.0 -pix_fmt yuv420p -preset medium -crf 30 -threads 1 \
    -x264-params "keyint=25:min-keyint=25:scenecut=0:repeat-headers=1:bframes=0" \
    -bsf:v filter_units=remove_types=6 \
    -f h264 clip.h264

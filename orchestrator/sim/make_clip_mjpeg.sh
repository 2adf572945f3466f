#!/bin/sh
# Regenerates orchestrator/sim/clip.mjpeg, the images the camera simulator loops for MJPEG
# (`raspivid -cd MJPEG`, `rpicam-vid --codec mjpeg`). Run once by hand; the simulator never needs ffmpeg.
#
# What the simulator needs from the file, and which flag gives it:
#   - JPEG images back to back, SOI (FF D8) ... EOI (FF D9), no container:  -c:v mjpeg -f mjpeg
#   - the same picture as clip.h264 (make_clip.sh), one second of it:       testsrc2 640x360, 25 fps, 1 s
#   - the colour layout a camera's JPEGs have (4:2:0, full range):         -pix_fmt yuvj420p
#   - small enough to ship (~11-12 KB an image, ~290 KB in all):            -q:v 10
#   - the same bytes on every run of the same ffmpeg build (no "Lavc" version comment in each image):
#                                                                          -fflags/-flags:v +bitexact
# The simulator splits the file at SOI/EOI with a plain search, which is safe only for clean data like
# this: no FF D9 inside any image's header segments. tests/test_sim.py checks that by splitting the file
# with the receiver's marker-walking splitter too and decoding every image. Made with ffmpeg 5.1.x (Debian 12).
set -eu
cd "$(dirname "$0")"
ffmpeg -hide_banner -loglevel error -y \
    -f lavfi -i "testsrc2=size=640x360:rate=25:duration=1" \
    -c:v mjpeg -pix_fmt yuvj420p -q:v 10 -fflags +bitexact -flags:v +bitexact \
    -f mjpeg clip.mjpeg

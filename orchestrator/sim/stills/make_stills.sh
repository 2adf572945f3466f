#!/bin/sh
# Regenerates the pictures the still simulator (orchestrator/sim/still.py) sends: one per format the
# real tools can write to stdout. Run once by hand; the simulator itself never needs ffmpeg.
#
# What the simulator needs from each picture, and which flag gives it:
#   - a real file of the format, which ffprobe / PyAV decode:  the image2 muxer picks the encoder by name
#   - the colour layout the Pi tools write:                   bmp 24-bit (bgr24, what rpicam-still and
#                                                              raspistill write), png rgb24, jpg yuvj420p
#   - something to look at:                                   testsrc2 (colour bars, moving parts)
#   - small enough to ship in the package (a few KB each):    96x72 (4:3 like the sensors), one frame
# The simulator adds a comment (JPEG COM, PNG tEXt, GIF comment extension; BMP: one pixel) that differs
# on every run, so every capture has its own bytes and hash, as a real camera's would.
set -eu
cd "$(dirname "$0")"
src="testsrc2=size=96x72:rate=1"
ffmpeg -hide_banner -loglevel error -y -f lavfi -i "$src" -frames:v 1 -pix_fmt yuvj420p -q:v 3 sample.jpg
ffmpeg -hide_banner -loglevel error -y -f lavfi -i "$src" -frames:v 1 -pix_fmt rgb24 sample.png
ffmpeg -hide_banner -loglevel error -y -f lavfi -i "$src" -frames:v 1 -pix_fmt bgr24 sample.bmp
ffmpeg -hide_banner -loglevel error -y -f lavfi -i "$src" -frames:v 1 sample.gif

#!/bin/sh
# Regenerates orchestrator/sim/clip_bframes.h264: the H.264 a Raspberry Pi 5 sends (rpicam-vid encoding in
# software, libx264 through libav) when `--low-latency` is not given. Run once by hand; the simulator never
# needs ffmpeg.
#
# rpicam-apps encoder/libav_encoder.cpp (encoderOptionsLibx264, v1.13) sets, without --low-latency:
#   max_b_frames = 1, preset superfast, partitions i8x8,i4x4, weightp none, weightb 0, motion-est dia,
#   sc_threshold 0, rc-lookahead 0, mixed_ref 0, me_range 16, one slice a frame; gop_size = --intra or the
#   frame rate; and no global header for a raw h264 output, so x264 repeats SPS/PPS before every IDR.
# The flags below ask for the same, and for what the simulator needs on top:
#   - raw Annex B, the same picture as clip.h264 (make_clip.sh):   -f h264, testsrc2 640x360 25 fps 2 s
#   - a B-frame in every gap, so every GOP has some:               b-adapt=0 (x264 decides per frame otherwise)
#   - one IDR a second, nowhere else:                              keyint=25:min-keyint=25:scenecut=0
#   - the same bytes on every run of one build:                    -threads 1
# x264's "options used" SEI stays in the first frame, as it does in a Pi 5's stream. Decode order differs
# from display order (I P B P B ...): what piorch must handle when a Pi 5 records without --low-latency.
# Made with ffmpeg 5.1.x / libx264 (Debian 12); tests check the layout, not the hash of this file.
set -eu
cd "$(dirname "$0")"
ffmpeg -hide_banner -loglevel error -y \
    -f lavfi -i "testsrc2=size=640x360:rate=25:duration=2" \
    -c:v libx264 -preset superfast -pix_fmt yuv420p -crf 30 -threads 1 -g 25 -bf 1 \
    -x264-params "keyint=25:min-keyint=25:scenecut=0:b-adapt=0:repeat-headers=1:partitions=i8x8,i4x4:weightp=0:weightb=0:me=dia:rc-lookahead=0:mixed-refs=0:merange=16" \
    -f h264 clip_bframes.h264

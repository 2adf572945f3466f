"""The simulated Raspberry Pi: stand-ins for raspivid / raspividyuv / rpicam-vid / libcamera-vid and the still
tools (raspistill, raspiyuv, rpicam-still, libcamera-still).

Modules: `profile` (which Pi: board, rpicam-apps build and release, from PIORCH_SIM_* variables), the option
languages (`raspicli` + `options`/`still_options` for the legacy tools, `boost_cli` for rpicam; the tables are
data: raspicam_options.txt, rpicam_options.txt, read by `tables`), `encoders` (which encoder a Pi sets up, or
how it refuses), `scene` (the picture the camera sees, at any size), `video_plan` (what a video encoder sends:
shipped clips, or the scene encoded by `synth` with PyAV, or raw frames laid out by `raw`), `still_pictures`
(each still encoding), `h264`/`frames`/`mjpeg_clip` (splitting and pacing the bytes), `runtime` (signals, lock,
log, faults, the shared main), `camera` and `still` (the tools, run as `python -m orchestrator.sim.camera TOOL
ARGS...`), `stand_in` (shell shims that put them on a PATH), `netcat` (the demo's nc). Pure modules do no
I/O but read their shipped tables. Nothing is imported here so that importing the package stays instant;
numpy and PyAV are imported only when a picture is drawn or encoded.
"""

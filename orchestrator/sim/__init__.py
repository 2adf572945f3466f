"""The simulated Raspberry Pi: stand-ins for raspivid / rpicam-vid / libcamera-vid and the still tools.

Modules: `profile` (which Pi: board, rpicam-apps build and release, from PIORCH_SIM_* variables), the option
languages (`raspicli` + `options`/`still_options` for the legacy tools, `boost_cli` for rpicam; the tables are
data: raspicam_options.txt, rpicam_options.txt, read by `tables`), `encoders` (which encoder a Pi sets up, or
how it refuses), `h264`/`frames`/`mjpeg_clip` (the bytes sent), `runtime` (signals, lock, log, faults, the
shared main), `camera` and `still` (the tools, run as `python -m orchestrator.sim.camera TOOL ARGS...`),
`stand_in` (shell shims that put them on a PATH), `netcat` (the demo's nc). Pure modules do no I/O but
read their shipped tables. Nothing is imported here so that importing the package stays instant.
"""

"""The camera simulator: raspivid / rpicam-vid / libcamera-vid stand-ins that stream a looped test clip.

Modules: `options` (the two real option languages, pure), `camera` (the simulated tool, run as
`python -m orchestrator.sim.camera TOOL ARGS...`), `stand_in` (shell shims that put it on a PATH).
Nothing is imported here so that importing the package stays instant.
"""

import os

# Headless rendering for every test process (the Makefile sets it too).
os.environ.setdefault("MUJOCO_GL", "egl")

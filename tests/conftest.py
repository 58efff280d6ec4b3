import os

# Headless rendering for every test process (the Makefile sets it too).
os.environ.setdefault("MUJOCO_GL", "egl")
# One torch thread per test process: tiny networks gain nothing from two, and two
# threads spinning on a busy 2-core machine made a 4 s trial take minutes.
os.environ.setdefault("OMP_NUM_THREADS", "1")

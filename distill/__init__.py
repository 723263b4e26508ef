"""vla-edge workstation side: simulator, demonstrations, teacher and student training, evaluation.

Commands: `python -m distill --help`.
"""

import os

# torch and MuJoCo's renderer spin OpenMP threads that fight each other on small CPUs (DESIGN.md:
# a training step 10 s instead of 0.4 s); passive waiting must be set before either is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# MuJoCo picks its OpenGL backend when first imported: headless EGL (Mesa) unless the user chose one.
os.environ.setdefault("MUJOCO_GL", "egl")
if os.environ["MUJOCO_GL"] in ("egl", "osmesa"):
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

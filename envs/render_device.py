"""Render on the GPU that trains (issue #9): pick the EGL device that is the trial's CUDA device.

MuJoCo's EGL backend renders on the device ``MUJOCO_EGL_DEVICE_ID`` names (an index into
EGL's device list), else on the first that works. On a multi-GPU host that is often not the
GPU the learner uses, so frames would cross the PCIe bus twice. EGL lists every GPU whatever
``CUDA_VISIBLE_DEVICES`` says (Ray sets it per trial), while torch's ``cuda:N`` counts only the
visible ones; the NVIDIA driver tells each EGL device's CUDA ordinal (``EGL_CUDA_DEVICE_NV``).
"""

from __future__ import annotations

import os

EGL_CUDA_DEVICE_NV = 0x323A


def physical_gpu(cuda_index: int, visible_devices: str | None) -> int:
    """The host-wide ordinal of torch's ``cuda:cuda_index`` under ``CUDA_VISIBLE_DEVICES``."""
    if not visible_devices:
        return cuda_index
    entries = [entry.strip() for entry in visible_devices.split(",") if entry.strip()]
    if cuda_index < len(entries) and entries[cuda_index].isdigit():
        return int(entries[cuda_index])
    return cuda_index  # UUID-style entries: fall back to the visible index


def egl_device_index(gpu: int) -> int | None:
    """Index in EGL's device list of the device whose CUDA ordinal is ``gpu``; None when EGL cannot say."""
    try:
        from OpenGL import EGL  # PyOpenGL, which dm_control's EGL renderer uses

        devices = EGL.eglQueryDevicesEXT()
    except Exception:  # noqa: BLE001 - no EGL, no NVIDIA extension: keep MuJoCo's own choice
        return None
    for index, device in enumerate(devices):
        value = EGL.EGLAttrib()
        try:
            if EGL.eglQueryDeviceAttribEXT(device, EGL_CUDA_DEVICE_NV, value) and value.value == gpu:
                return index
        except Exception:  # noqa: BLE001 - a Mesa device does not know the attribute
            continue
    return None


def select_render_device(cuda_index: int) -> str | None:
    """Point MuJoCo's EGL rendering at the GPU behind ``cuda:cuda_index`` before the first context exists.

    Leaves an explicit ``MUJOCO_EGL_DEVICE_ID`` alone, and does nothing unless ``MUJOCO_GL=egl``.
    Returns the device id set, if any.
    """
    if os.environ.get("MUJOCO_GL") != "egl" or "MUJOCO_EGL_DEVICE_ID" in os.environ:
        return None
    index = egl_device_index(physical_gpu(cuda_index, os.environ.get("CUDA_VISIBLE_DEVICES")))
    if index is None:
        return None
    os.environ["MUJOCO_EGL_DEVICE_ID"] = str(index)
    return str(index)

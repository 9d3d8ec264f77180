"""The Cortex-M cross toolchain: arm-none-eabi-gcc with newlib, its binary utilities, and
qemu-system-arm to run what it builds."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass

from ..errors import ToolchainError

APT = "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm"


@dataclass
class ArmToolchain:
    cc: str                  # arm-none-eabi-gcc
    objdump: str
    nm: str
    qemu: str | None         # qemu-system-arm, None when not needed and absent

    def version(self) -> str:
        r = subprocess.run([self.cc, "-dumpfullversion"], capture_output=True, text=True, check=False)
        return f"arm-none-eabi-gcc {r.stdout.strip()}"

    def qemu_version(self) -> str:
        if not self.qemu:
            return ""
        r = subprocess.run([self.qemu, "--version"], capture_output=True, text=True, check=False)
        m = re.search(r"version (\S+)", r.stdout)
        return m.group(1) if m else "?"


def find_arm_toolchain(need_qemu: bool = True) -> ArmToolchain:
    """arm-none-eabi-gcc with newlib, objdump and nm, and (to run) qemu-system-arm; else a
    ToolchainError naming what is missing and the apt command that installs it."""
    cc, objdump = shutil.which("arm-none-eabi-gcc"), shutil.which("arm-none-eabi-objdump")
    qemu = shutil.which("qemu-system-arm")
    missing = []
    if not cc or not objdump:
        missing.append("arm-none-eabi-gcc")
    else:
        r = subprocess.run([cc, "-print-file-name=rdimon.specs"], capture_output=True, text=True, check=False)
        if not os.path.isfile(r.stdout.strip()):
            missing.append("newlib (rdimon.specs)")
    if need_qemu and not qemu:
        missing.append("qemu-system-arm")
    if missing:
        raise ToolchainError(f"the Cortex-M build needs {', '.join(missing)}, not found on PATH; "
                             f"install the toolchain with `{APT}`")
    nm = shutil.which("arm-none-eabi-nm") or objdump.replace("objdump", "nm")
    return ArmToolchain(cc, objdump, nm, qemu)

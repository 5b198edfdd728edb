"""A one-node SLURM cluster on localhost for the real-SLURM test: munged, slurmctld and slurmd with a config this
module writes, started as root and stopped afterwards. Needs Debian's packages:

    apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "scancel", "sinfo")
INSTALL = "apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge (as root)"
CONFIG = """ClusterName=genlit
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
SlurmctldPort=16917
SlurmdPort=16918
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
JobRequeue=1
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def missing() -> str | None:
    """Why the cluster cannot run here (one line naming what to install), or None."""
    absent = [name for name in DAEMONS if shutil.which(name) is None and not Path(f"/usr/sbin/{name}").exists()]
    if absent:
        return f"no {', '.join(absent)}: {INSTALL}"
    if os.geteuid() != 0:
        return "the one-node SLURM cluster runs its daemons as root"
    return None


class SlurmCluster:
    """Start with :meth:`start`; ``env`` is the environment to run SLURM commands in; :meth:`stop` ends it."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.host = folder, socket.gethostname().split(".")[0]
        self.conf = folder / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self._processes: list[subprocess.Popen] = []

    def start(self) -> SlurmCluster:
        """Write the config, start munged (if it is not running), slurmctld and slurmd; wait for an idle node."""
        for sub in ("state", "spool"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(CONFIG.format(host=self.host, dir=self.folder, cpus=os.cpu_count() or 2))
        if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode != 0:
            Path("/run/munge").mkdir(exist_ok=True)
            shutil.chown("/run/munge", "munge", "munge")
            subprocess.run(["su", "-s", "/bin/sh", "munge", "-c", "/usr/sbin/munged"], check=True)
        for daemon in ("slurmctld", "slurmd"):
            self._processes.append(subprocess.Popen([f"/usr/sbin/{daemon}", "-D", "-f", str(self.conf)],
                                                    env=self.env, stdout=subprocess.DEVNULL,
                                                    stderr=subprocess.DEVNULL))  # fmt: skip
        self.wait(lambda: "idle" in self.run("sinfo", "-h", "-o", "%T"), 60, "an idle node")
        return self

    def run(self, *command: str) -> str:
        """A SLURM command's output."""
        return subprocess.run(command, env=self.env, capture_output=True, text=True, check=True).stdout

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job``'s fields (JobState, Restarts, ...)."""
        return dict(re.findall(r"(\w+)=(\S*)", self.run("scontrol", "show", "job", job_id)))

    @staticmethod
    def wait(condition, timeout: float, what: str) -> None:
        """Poll ``condition`` every half second until it holds; fail naming ``what`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.5)
        raise TimeoutError(f"waited {timeout:.0f} s for {what}")

    def stop(self) -> None:
        """Cancel what is queued and stop the daemons this cluster started."""
        subprocess.run(["scancel", "--user", "root"], env=self.env, capture_output=True)
        for process in self._processes:
            process.send_signal(signal.SIGTERM)
        for process in self._processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()

"""A private istgt (Debian package istgt) for interoperability tests: a second, independent
target with its own defaults (it declares MaxRecvDataSegmentLength, allows several connections)."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from support.tgt import free_port

NODE_BASE = "iqn.2026-11.test.istgt"


@dataclass
class IstgtDaemon:
    workdir: Path
    luns: dict[str, int]  # target short name -> size of its LUN 0 (a sparse file)
    auth_method: str = "Auto"  # "Auto", "CHAP" or "CHAP Mutual"
    use_digest: str = "Auto"  # "Auto", "Header", "Data" or "Header Data"
    accounts: list[tuple[str, str, str, str]] = field(default_factory=list)  # user, secret, mutual user, secret
    port: int = 0
    proc: subprocess.Popen | None = None

    def iqn(self, name: str) -> str:
        return f"{NODE_BASE}:{name}"

    def backing(self, name: str) -> Path:
        return self.workdir / f"{name}.img"

    @property
    def url(self) -> str:
        return f"iscsi://127.0.0.1:{self.port}"

    def _config(self, control_port: int) -> str:
        units = []
        for i, (name, size) in enumerate(sorted(self.luns.items()), 1):
            with open(self.backing(name), "ab") as f:
                f.truncate(size)
            units.append(f"""
[LogicalUnit{i}]
  TargetName {name}
  Mapping PortalGroup1 InitiatorGroup1
  AuthMethod {self.auth_method}
  AuthGroup AuthGroup1
  UseDigest {self.use_digest}
  UnitType Disk
  LUN0 Storage {self.backing(name)} Auto
""")
        return f"""[Global]
  NodeBase "{NODE_BASE}"
  PidFile {self.workdir}/istgt.pid
  AuthFile {self.workdir}/auth.conf
  MediaDirectory {self.workdir}
  Timeout 30
  NopInInterval 20
  DiscoveryAuthMethod Auto
  MaxSessions 16
  MaxConnections 4
  FirstBurstLength 65536
  MaxBurstLength 262144
  MaxRecvDataSegmentLength 65536
  InitialR2T Yes
  ImmediateData Yes
  ErrorRecoveryLevel 0

[UnitControl]
  AuthMethod CHAP Mutual
  AuthGroup AuthGroup10000
  Portal UC1 127.0.0.1:{control_port}
  Netmask 127.0.0.1

[PortalGroup1]
  Portal DA1 127.0.0.1:{self.port}

[InitiatorGroup1]
  InitiatorName "ALL"
  Netmask 127.0.0.0/8
""" + "".join(units)

    def _auth(self) -> str:
        lines = ["[AuthGroup1]"]
        for user, secret, muser, msecret in self.accounts or [("nobody-here", "unused-secret", "", "")]:
            lines.append(f'  Auth "{user}" "{secret}"' + (f' "{muser}" "{msecret}"' if muser else ""))
        lines += ["[AuthGroup10000]", '  Auth "ctluser" "ctl-unused-secret" "ctlmutual" "ctl-mutual-secret"']
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 10.0) -> IstgtDaemon:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        conf = self.workdir / "istgt.conf"
        conf.write_text(self._config(free_port()))
        auth = self.workdir / "auth.conf"
        auth.write_text(self._auth())
        auth.chmod(0o600)
        with open(self.workdir / "istgt.log", "wb") as log:  # istgt keeps its own copy of the descriptor
            self.proc = subprocess.Popen(["istgt", "-c", str(conf), "-D"], stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"istgt exited: {(self.workdir / 'istgt.log').read_text()[-2000:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("istgt did not start listening")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> IstgtDaemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""A fake Pi that takes a password: the test sshd, for one throwaway account made with useradd (root only).

A fresh Raspberry Pi has a user with a password and no authorized key; `piorch bootstrap` logs in with
that password once to install the laptop's key. The ordinary fixture (tests/sshd_server.py) only takes
keys, for the user running the tests. This subclass, for tests run as root (CI):
  - creates an account `piorcht<hex>` with a random password, its home being the server's scratch home
    (HOME of every remote command, as in the ordinary fixture), and deletes it again on stop();
  - lets that account (and only it: AllowUsers) log in with its password or with a key in
    ~/.ssh/authorized_keys, the place `bootstrap` writes to; the fixture's own key is not authorized;
  - opens the server folder for that account (it runs the session wrapper and the stand-ins in bin/).
sshd runs with UsePAM no, as in the fixture, so it checks the password against /etc/shadow itself.
It relies on SshServer's layout (`_prepare_files`, `_write_config` writing `_config`); tests/sshd_server.py
itself is not changed.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import subprocess
from collections.abc import Mapping

from tests.sshd_server import SshServer, SshServerError

# useradd/userdel take well under a second; the deadline guards against a locked /etc/passwd.
ACCOUNT_TIMEOUT_S = 30.0


def can_make_accounts() -> bool:
    return os.geteuid() == 0 and all(
        os.access(f"/usr/sbin/{tool}", os.X_OK) for tool in ("useradd", "userdel", "chpasswd"))


class PasswordSshServer(SshServer):
    def __init__(self, extra_env: Mapping[str, str] | None = None) -> None:
        super().__init__(extra_env)
        self.account = f"piorcht{secrets.token_hex(4)}"
        self.password = secrets.token_urlsafe(18)
        self._account_made = False

    def _run(self, argv: list[str], stdin: str | None = None) -> None:
        result = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=ACCOUNT_TIMEOUT_S,
                                check=False)
        if result.returncode != 0:
            raise SshServerError(f"{argv[0]} failed: {result.stderr.strip()}")

    def _prepare_files(self) -> None:
        super()._prepare_files()
        assert self._tmp is not None
        home = self._tmp / "home"
        # -M: the home exists already (the scratch home); -s /bin/sh: sshd needs a real login shell.
        self._run(["/usr/sbin/useradd", "-M", "-d", str(home), "-s", "/bin/sh", self.account])
        self._account_made = True
        self._run(["/usr/sbin/chpasswd"], stdin=f"{self.account}:{self.password}\n")
        entry = pwd.getpwnam(self.account)
        # mkdtemp made the folder 0700; the account runs the wrapper and the bin/ stand-ins in it.
        self._tmp.chmod(0o755)
        for folder in (home, self._tmp / "bin"):
            os.chown(folder, entry.pw_uid, entry.pw_gid)

    def _write_config(self, port: int) -> None:
        super()._write_config(port)
        assert self._config is not None and self._tmp is not None
        text = self._config.read_text()
        text = text.replace("PasswordAuthentication no", "PasswordAuthentication yes")
        text = re.sub(r"^AuthorizedKeysFile .*$", f"AuthorizedKeysFile {self._tmp}/home/.ssh/authorized_keys",
                      text, flags=re.MULTILINE)
        self._config.write_text(text + f"AllowUsers {self.account}\n")

    def __enter__(self) -> PasswordSshServer:
        self.start()
        return self

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            if self._account_made:
                self._account_made = False
                self._run(["/usr/sbin/userdel", self.account])

//! The demo service's sshd and the client's key, so `ssh` works by the fd address.

use super::*;

/// An sshd for the service, with throw-away keys, when the host has OpenSSH.
pub(super) struct SshSetup {
    sshd: PathBuf,
}

impl SshSetup {
    pub(super) fn available() -> Option<SshSetup> {
        let sshd = PathBuf::from("/usr/sbin/sshd");
        let keygen = Command::new("ssh-keygen")
            .arg("-?")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        (sshd.exists() && keygen).then_some(SshSetup { sshd })
    }

    /// Starts sshd (key auth only, on port 22 of every address) in `node`; returns the client's
    /// command with `{ns}` and `{addr}` to fill in.
    pub(super) fn start(&self, net: &mut Net, node: &Node) -> Result<String, String> {
        let dir = node.dir.join("ssh");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let (host_key, client_key) = (dir.join("host_key"), dir.join("client_key"));
        for k in [&host_key, &client_key] {
            must(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                    .arg(k),
            )?;
        }
        let auth = dir.join("authorized_keys");
        std::fs::copy(dir.join("client_key.pub"), &auth)
            .map_err(|e| format!("{}: {e}", auth.display()))?;
        let cfg = dir.join("sshd_config");
        std::fs::write(
            &cfg,
            format!(
                "Port 22\nListenAddress ::\nHostKey {}\nAuthorizedKeysFile {}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nPidFile {}\n",
                host_key.display(),
                auth.display(),
                dir.join("sshd.pid").display()
            ),
        )
        .map_err(|e| format!("{}: {e}", cfg.display()))?;
        // sshd insists on its privilege-separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let mut c = node.host.cmd(&self.sshd);
        c.args(["-D", "-e", "-f"]).arg(&cfg);
        net.spawn(c, &dir.join("sshd.log"), "sshd".into())?;
        Ok(format!(
            "sudo ip netns exec {{ns}} ssh -i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null root@{{addr}} hostname",
            client_key.display()
        ))
    }
}

//! `--cap-add`, `--cap-drop`, `--security-opt` and `--userns` of `run` and
//! `sandbox create`: what the sandboxed command may do to the kernel.

use crate::exit::CliError;
use cairn::sandbox::idmap::IdMapping;
use cairn::sandbox::Security;
use clap::Args;

#[derive(Args, Default)]
pub struct SecurityArgs {
    /// Add a capability to Docker's default set (NET_ADMIN, CAP_SYS_PTRACE, ALL), repeatable
    #[arg(long = "cap-add", value_name = "CAP")]
    cap_add: Vec<String>,
    /// Drop a capability from the set (ALL drops every one), repeatable
    #[arg(long = "cap-drop", value_name = "CAP")]
    cap_drop: Vec<String>,
    /// seccomp=unconfined (no syscall filter) or no-new-privileges, repeatable
    #[arg(long = "security-opt", value_name = "OPT")]
    security_opt: Vec<String>,
    /// User namespace: `host` maps container IDs to the same host IDs (as root:
    /// container root is host root; unsafe, see docs/security.md)
    #[arg(long, value_name = "MODE")]
    userns: Option<String>,
}

impl SecurityArgs {
    /// The library's security settings these flags ask for.
    pub fn security(&self) -> Result<Security, CliError> {
        let mut security = Security::default()
            .with_caps(&self.cap_add, &self.cap_drop)
            .map_err(CliError::bad_input)?;
        for opt in &self.security_opt {
            security
                .apply_opt(opt)
                .map_err(|e| CliError::bad_input(format!("--security-opt: {e}")))?;
        }
        Ok(security)
    }

    /// The ID mapping `--userns` asks for; None keeps the default.
    pub fn id_mapping(&self) -> Result<Option<IdMapping>, CliError> {
        match self.userns.as_deref() {
            None | Some("") | Some("auto") => Ok(None),
            Some("host") => Ok(Some(IdMapping::host_identity())),
            Some(other) => Err(CliError::bad_input(format!(
                "--userns {other:?}: expected host or auto"
            ))),
        }
    }
}

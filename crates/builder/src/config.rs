//! The image config as a build uses it: cairn-store's typed
//! [`ImageConfig`] (one type for builds, sandbox commits and snapshots; it
//! keeps Healthcheck, OnBuild, Shell, ArgsEscaped and every field a base
//! image carries that Cairn does not know), plus what only a build makes
//! or asks: the scratch config and reads with Docker's defaults.

use cairn_registry::Platform;
pub use cairn_store::image_config::{Field, Healthcheck, History, ImageConfig, RootFs, RunConfig};

/// The config of `FROM scratch` for `platform`: BuildKit's empty image
/// has the default PATH in its Env.
pub fn scratch(platform: &Platform) -> ImageConfig {
    let path = format!("PATH={}", cairn_dockerfile::scope::DEFAULT_PATH);
    ImageConfig {
        architecture: Field::Set(platform.architecture.clone()),
        os: Field::Set(platform.os.clone()),
        variant: match &platform.variant {
            Some(v) => Field::Set(v.clone()),
            None => Field::Absent,
        },
        config: Field::Set(RunConfig {
            env: Field::Set(vec![path]),
            ..RunConfig::default()
        }),
        rootfs: Field::Set(RootFs::layers()),
        history: Field::Set(vec![]),
        ..ImageConfig::default()
    }
}

/// Reads of the run config with what an unset field means to a build.
pub trait Runtime {
    /// ENV entries as (key, value), in order.
    fn env(&self) -> Vec<(String, String)>;
    /// The Env list as written.
    fn env_list(&self) -> Vec<String>;
    /// WorkingDir ("" when unset).
    fn working_dir(&self) -> String;
    /// User ("" when unset).
    fn user(&self) -> String;
    /// SHELL (empty when unset: the caller's default applies).
    fn shell(&self) -> Vec<String>;
    /// ONBUILD triggers.
    fn on_build(&self) -> Vec<String>;
}

impl Runtime for ImageConfig {
    fn env(&self) -> Vec<(String, String)> {
        self.run().map(RunConfig::env_pairs).unwrap_or_default()
    }
    fn env_list(&self) -> Vec<String> {
        self.run().map(|r| r.env.or_default()).unwrap_or_default()
    }
    fn working_dir(&self) -> String {
        self.run()
            .map(|r| r.working_dir.or_default())
            .unwrap_or_default()
    }
    fn user(&self) -> String {
        self.run().map(|r| r.user.or_default()).unwrap_or_default()
    }
    fn shell(&self) -> Vec<String> {
        self.run().map(|r| r.shell.or_default()).unwrap_or_default()
    }
    fn on_build(&self) -> Vec<String> {
        self.run()
            .map(|r| r.on_build.or_default())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_is_what_buildkit_writes() {
        let mut c = scratch(&"linux/arm64/v8".parse().unwrap());
        c.run_mut().set_env("A", "1");
        assert_eq!(
            String::from_utf8(c.to_bytes().unwrap()).unwrap(),
            r#"{"architecture":"arm64","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","A=1"]},"history":[],"os":"linux","rootfs":{"diff_ids":[],"type":"layers"},"variant":"v8"}"#
        );
        assert_eq!(c.env()[1], ("A".to_string(), "1".to_string()));
        assert_eq!(c.working_dir(), "");
    }
}

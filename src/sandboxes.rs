//! Sandboxes through the handle: create from an image, exec with captured
//! or streamed output, write and read files, commit, remove.

use crate::error::{Error, ErrorKind, Result};
use crate::handle::Cairn;
use cairn_layer::Compression;
use cairn_sandbox::manager::{Argv, CreateOptions, ExecOptions, Resources, SandboxRecord};
use cairn_sandbox::{CancelToken, ExecOutput, Network, RunOutcome, StdStream};
use cairn_store::Digest;
use std::time::Duration;

/// How to create a sandbox. Defaults: generated name only, host network,
/// no cpu/memory limits (the default pids limit), Docker's security
/// defaults, kept until removed.
///
/// ```
/// let opts = cairn::SandboxOptions::default().name("dev").cpu(1.0).memory_gb(0.5);
/// assert_eq!(opts.name.as_deref(), Some("dev"));
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SandboxOptions {
    /// A name to find it by (unique per organization).
    pub name: Option<String>,
    /// `Network::None` gives it a network namespace of its own (loopback only).
    pub network: Network,
    /// CPUs (cgroup).
    pub cpu: Option<f64>,
    /// Memory in GiB (cgroup).
    pub memory_gb: Option<f64>,
    /// Processes.
    pub pids: Option<u64>,
    /// The organization that owns it (others cannot see or use it).
    pub organization: Option<String>,
    /// Remove it once this process is gone.
    pub ephemeral: bool,
}

impl SandboxOptions {
    /// Name the sandbox.
    ///
    /// ```
    /// assert_eq!(cairn::SandboxOptions::default().name("a").name.as_deref(), Some("a"));
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Limit CPUs.
    ///
    /// ```
    /// assert_eq!(cairn::SandboxOptions::default().cpu(2.0).cpu, Some(2.0));
    /// ```
    pub fn cpu(mut self, cpus: f64) -> Self {
        self.cpu = Some(cpus);
        self
    }

    /// Limit memory (GiB).
    ///
    /// ```
    /// assert_eq!(cairn::SandboxOptions::default().memory_gb(1.0).memory_gb, Some(1.0));
    /// ```
    pub fn memory_gb(mut self, gb: f64) -> Self {
        self.memory_gb = Some(gb);
        self
    }

    /// Set the network.
    ///
    /// ```
    /// let o = cairn::SandboxOptions::default().network(cairn::sandbox::Network::None);
    /// assert_eq!(o.network, cairn::sandbox::Network::None);
    /// ```
    pub fn network(mut self, network: Network) -> Self {
        self.network = network;
        self
    }

    /// Make it organization `org`'s.
    ///
    /// ```
    /// let o = cairn::SandboxOptions::default().organization("acme");
    /// assert_eq!(o.organization.as_deref(), Some("acme"));
    /// ```
    pub fn organization(mut self, org: impl Into<String>) -> Self {
        self.organization = Some(org.into());
        self
    }

    pub(crate) fn create_options(&self) -> CreateOptions {
        CreateOptions {
            name: self.name.clone(),
            network: self.network,
            resources: Resources {
                cpu: self.cpu,
                memory_gb: self.memory_gb,
                pids: self.pids,
                not_applied: Vec::new(),
            },
            ephemeral: self.ephemeral,
            ..CreateOptions::default()
        }
    }
}

/// One command to run in a sandbox: argv exactly (no shell), plus env,
/// user, working dir and timeout.
///
/// ```
/// let req = cairn::ExecRequest::new(["sh", "-c", "echo $GREETING"]).env("GREETING", "hi");
/// assert_eq!(req.argv, ["sh", "-c", "echo $GREETING"]);
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ExecRequest {
    /// The command; argv[0] is looked up in the image's PATH.
    pub argv: Vec<String>,
    /// `KEY=VALUE` entries over the image's Env.
    pub env: Vec<String>,
    /// `user[:group]` (default: the image's USER).
    pub user: Option<String>,
    /// Working dir (default: the image's WORKDIR).
    pub workdir: Option<String>,
    /// Kill the command and all it started after this long.
    pub timeout: Option<Duration>,
}

impl ExecRequest {
    /// Run `argv`.
    ///
    /// ```
    /// assert_eq!(cairn::ExecRequest::new(["true"]).argv, ["true"]);
    /// ```
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ExecRequest {
            argv: argv.into_iter().map(Into::into).collect(),
            ..ExecRequest::default()
        }
    }

    /// Set an environment variable.
    ///
    /// ```
    /// assert_eq!(cairn::ExecRequest::new(["env"]).env("A", "1").env, ["A=1"]);
    /// ```
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push(format!("{key}={value}"));
        self
    }

    /// Run as `user`.
    ///
    /// ```
    /// assert_eq!(cairn::ExecRequest::new(["id"]).user("1000").user.as_deref(), Some("1000"));
    /// ```
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Run in `dir`.
    ///
    /// ```
    /// assert_eq!(cairn::ExecRequest::new(["pwd"]).workdir("/tmp").workdir.as_deref(), Some("/tmp"));
    /// ```
    pub fn workdir(mut self, dir: impl Into<String>) -> Self {
        self.workdir = Some(dir.into());
        self
    }

    /// Kill it after `timeout`.
    ///
    /// ```
    /// let r = cairn::ExecRequest::new(["sleep", "9"]).timeout(std::time::Duration::from_secs(1));
    /// assert!(r.timeout.is_some());
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    fn options(&self, cancel: &CancelToken) -> ExecOptions {
        ExecOptions {
            argv: Argv::Direct(self.argv.clone()),
            env: self.env.clone(),
            user: self.user.clone(),
            workdir: self.workdir.clone(),
            timeout: self.timeout,
            cancel: Some(cancel.clone()),
            ..ExecOptions::default()
        }
    }
}

impl Cairn {
    /// Create a sandbox from store image `image`.
    ///
    /// ```
    /// cairn::init();
    /// # let dir = tempfile::tempdir()?;
    /// # drop(cairn_testsupport::store_with_busybox(dir.path()));
    /// let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path().join("store")))?;
    /// let sb = cairn.create_sandbox("busybox:fixture", &cairn::SandboxOptions::default().name("dev"))?;
    /// assert_eq!(cairn.sandbox("dev")?.id, sb.id);
    /// cairn.remove_sandbox(&sb.id)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn create_sandbox(&self, image: &str, opts: &SandboxOptions) -> Result<SandboxRecord> {
        self.check_ready()?;
        if let Some(org) = &opts.organization {
            Cairn::check_org(org)?;
        }
        let _lease = self.store().lease()?;
        let manager = self.sandbox_manager(opts.organization.as_deref());
        let record = manager.create(image, opts.create_options())?;
        self.enforce_strict(&record)?;
        Ok(record)
    }

    /// Under strict resources, refuse (and remove) a sandbox with a limit
    /// that could not be applied.
    pub(crate) fn enforce_strict(&self, record: &SandboxRecord) -> Result<()> {
        let not_applied = &record.resources.not_applied;
        if !self.options().strict_resources() || not_applied.is_empty() {
            return Ok(());
        }
        self.sandbox_manager(None).remove(&record.id)?;
        Err(Error::new(
            ErrorKind::Unavailable,
            format!(
                "sandbox limits cannot be applied on this machine (strict resources): {}",
                not_applied.join("; ")
            ),
        ))
    }

    /// A sandbox by id, unique id prefix or name.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path()))?;
    /// assert_eq!(cairn.sandbox("nope").unwrap_err().kind(), cairn::ErrorKind::NotFound);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn sandbox(&self, id_or_name: &str) -> Result<SandboxRecord> {
        Ok(self.sandbox_manager(None).get(id_or_name)?)
    }

    /// Every sandbox, oldest first.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path()))?;
    /// assert!(cairn.sandboxes()?.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn sandboxes(&self) -> Result<Vec<SandboxRecord>> {
        Ok(self.sandbox_manager(None).list()?)
    }

    /// Run a command and capture its output (both streams read while it
    /// runs: any amount works) and exit code.
    ///
    /// ```
    /// cairn::init();
    /// # let dir = tempfile::tempdir()?;
    /// # drop(cairn_testsupport::store_with_busybox(dir.path()));
    /// # let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path().join("store")))?;
    /// let sb = cairn.create_sandbox("busybox:fixture", &Default::default())?;
    /// let out = cairn.exec_output(&sb.id, &cairn::ExecRequest::new(["sh", "-c", "echo out; echo err >&2; exit 3"]))?;
    /// assert_eq!((out.stdout.as_slice(), out.stderr.as_slice(), out.exit_code), (&b"out\n"[..], &b"err\n"[..], 3));
    /// # cairn.remove_sandbox(&sb.id)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn exec_output(&self, sandbox: &str, req: &ExecRequest) -> Result<ExecOutput> {
        self.exec_output_with(sandbox, req, &CancelToken::new())
    }

    /// [`Cairn::exec_output`], killed when `cancel` fires.
    ///
    /// ```
    /// cairn::init();
    /// # let dir = tempfile::tempdir()?;
    /// # drop(cairn_testsupport::store_with_busybox(dir.path()));
    /// # let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path().join("store")))?;
    /// # let sb = cairn.create_sandbox("busybox:fixture", &Default::default())?;
    /// let cancel = cairn::CancelToken::new();
    /// cancel.cancel();
    /// let out = cairn.exec_output_with(&sb.id, &cairn::ExecRequest::new(["sleep", "60"]), &cancel)?;
    /// assert!(out.outcome.cancelled);
    /// # cairn.remove_sandbox(&sb.id)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn exec_output_with(
        &self,
        sandbox: &str,
        req: &ExecRequest,
        cancel: &CancelToken,
    ) -> Result<ExecOutput> {
        self.check_ready()?;
        Ok(self
            .sandbox_manager(None)
            .exec_output(sandbox, req.options(cancel))?)
    }

    /// Run a command, handing its output to `sink` as it comes.
    ///
    /// ```
    /// cairn::init();
    /// # let dir = tempfile::tempdir()?;
    /// # drop(cairn_testsupport::store_with_busybox(dir.path()));
    /// # let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path().join("store")))?;
    /// # let sb = cairn.create_sandbox("busybox:fixture", &Default::default())?;
    /// let mut seen = Vec::new();
    /// let outcome = cairn.exec_streaming(&sb.id, &cairn::ExecRequest::new(["echo", "hi"]),
    ///     &cairn::CancelToken::new(), &mut |stream, bytes| seen.push((stream, bytes.to_vec())))?;
    /// assert_eq!(outcome.exit_code, 0);
    /// assert_eq!(seen, [(cairn::StdStream::Stdout, b"hi\n".to_vec())]);
    /// # cairn.remove_sandbox(&sb.id)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn exec_streaming(
        &self,
        sandbox: &str,
        req: &ExecRequest,
        cancel: &CancelToken,
        sink: &mut dyn FnMut(StdStream, &[u8]),
    ) -> Result<RunOutcome> {
        self.check_ready()?;
        Ok(self
            .sandbox_manager(None)
            .exec_streaming(sandbox, req.options(cancel), sink)?)
    }

    /// Write `data` to `path` in the sandbox with `mode`, as the sandbox's
    /// user, without a shell; the path resolves inside the sandbox, and its
    /// directory must exist (as with `docker cp`; a missing one is
    /// [`ErrorKind::NotFound`]).
    ///
    /// ```
    /// cairn::init();
    /// # let dir = tempfile::tempdir()?;
    /// # drop(cairn_testsupport::store_with_busybox(dir.path()));
    /// # let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path().join("store")))?;
    /// # let sb = cairn.create_sandbox("busybox:fixture", &Default::default())?;
    /// cairn.write_file(&sb.id, "/tmp/main.py", b"print('hi')\n", 0o644)?;
    /// assert_eq!(cairn.read_file(&sb.id, "/tmp/main.py")?, b"print('hi')\n");
    /// # cairn.remove_sandbox(&sb.id)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn write_file(&self, sandbox: &str, path: &str, data: &[u8], mode: u32) -> Result<()> {
        self.check_ready()?;
        let manager = self.sandbox_manager(None);
        Ok(manager.write_file(sandbox, path, data, mode, None)?)
    }

    /// Read the regular file `path` of the sandbox, as its user.
    ///
    /// ```
    /// cairn::init();
    /// # let dir = tempfile::tempdir()?;
    /// # drop(cairn_testsupport::store_with_busybox(dir.path()));
    /// # let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path().join("store")))?;
    /// # let sb = cairn.create_sandbox("busybox:fixture", &Default::default())?;
    /// let err = cairn.read_file(&sb.id, "/no/such/file").unwrap_err();
    /// assert_eq!(err.kind(), cairn::ErrorKind::NotFound);
    /// # cairn.remove_sandbox(&sb.id)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read_file(&self, sandbox: &str, path: &str) -> Result<Vec<u8>> {
        self.check_ready()?;
        Ok(self.sandbox_manager(None).read_file(sandbox, path, None)?)
    }

    /// Commit the sandbox's changes as a new image tagged `name`; the
    /// sandbox carries on from it.
    ///
    /// ```
    /// cairn::init();
    /// # let dir = tempfile::tempdir()?;
    /// # drop(cairn_testsupport::store_with_busybox(dir.path()));
    /// # let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path().join("store")))?;
    /// # let sb = cairn.create_sandbox("busybox:fixture", &Default::default())?;
    /// cairn.write_file(&sb.id, "/state", b"1", 0o600)?;
    /// let manifest = cairn.commit_sandbox(&sb.id, "localhost/saved:1")?;
    /// assert_eq!(cairn.store().resolve("localhost/saved:1")?, manifest);
    /// # cairn.remove_sandbox(&sb.id)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn commit_sandbox(&self, sandbox: &str, name: &str) -> Result<Digest> {
        self.check_ready()?;
        let _lease = self.store().lease()?;
        Ok(self
            .sandbox_manager(None)
            .commit(sandbox, name, Compression::Gzip)?)
    }

    /// Remove a sandbox (its processes, files and GC root).
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let cairn = cairn::Cairn::open(cairn::CairnOptions::new(dir.path()))?;
    /// assert_eq!(cairn.remove_sandbox("nope").unwrap_err().kind(), cairn::ErrorKind::NotFound);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn remove_sandbox(&self, sandbox: &str) -> Result<()> {
        let _lease = self.store().lease()?;
        Ok(self.sandbox_manager(None).remove(sandbox)?)
    }
}

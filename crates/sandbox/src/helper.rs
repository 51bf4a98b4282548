//! The helper's side: everything that runs inside the new namespaces.
//!
//! Process tree: caller -> helper (unshares, waits for its ID maps, forks)
//! -> PID 1 of the new PID namespace (mounts the rootfs, pivots, forks the
//! command, reaps everything, exits with the command's status) -> command.
//! When PID 1 exits the kernel kills every process left in the namespace, so
//! a command that leaves daemons behind leaves nothing.

use crate::protocol::{Failure, FileOp, Request, TaskReply, HELPER_ENV, MAPPED, UNSHARED};
use crate::rootfs;
use crate::spec::{Network, RunSpec};
use crate::users::{resolve_user, ExecUser};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// If this process was started as a sandbox helper, do the helper's work and
/// exit; otherwise return at once. Call it first thing in `main`, before any
/// thread is started (the kernel refuses a new user namespace to a
/// multithreaded process).
pub fn init_hook() {
    INITIALISED.store(true, std::sync::atomic::Ordering::SeqCst);
    let Some(fds) = std::env::var_os(HELPER_ENV) else {
        return;
    };
    let code = exec_helper_main(&fds.to_string_lossy());
    // SAFETY: _exit ends the process at once; nothing of this fresh helper
    // needs flushing or unwinding.
    unsafe { libc::_exit(code) }
}

/// Set by [`init_hook`]: a binary that never called it cannot be its own
/// helper (the re-executed copy would just run `main` again).
static INITIALISED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this process called [`init_hook`].
pub fn initialised() -> bool {
    INITIALISED.load(std::sync::atomic::Ordering::SeqCst)
}

fn parse_fds(value: &str) -> Option<(RawFd, RawFd)> {
    let (a, b) = value.split_once(',')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// The helper as a fresh exec of the binary: its pipes are named by the
/// environment, and the request comes down the first one.
fn exec_helper_main(fds: &str) -> i32 {
    let Some((down_fd, up_fd)) = parse_fds(fds) else {
        eprintln!("cairn-sandbox: malformed {HELPER_ENV}");
        return 125;
    };
    std::env::remove_var(HELPER_ENV);
    // SAFETY: the caller handed these two open descriptors to us and nothing
    // else in this fresh process owns them.
    let (down, up) = unsafe { (File::from_raw_fd(down_fd), File::from_raw_fd(up_fd)) };
    serve(down, up, Start::Read)
}

/// Be the helper: unshare, wait for the ID maps, then run the request (a
/// sandboxed command through PID 1, or a task). `request` is given when the
/// helper is a fork of the caller (see `launch.rs`), else read from `down`.
/// Returns the helper's exit code.
pub(crate) fn serve(mut down: File, mut up: File, start: Start) -> i32 {
    // The exec'd helper inherited these without close-on-exec; the command
    // must not: an open `up` would keep the caller waiting for our report.
    for fd in [&down, &up] {
        let _ = nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
    }
    // An ignored SIGCHLD (inherited from a caller that ignores it) would
    // make the kernel reap our children before we can wait for them.
    // SAFETY: resetting one disposition to the default.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
    let request = match start {
        Start::Early(mapping) => return serve_early(down, up, mapping),
        Start::Given(request) => Ok(request),
        Start::Read => read_request(&mut down),
    };
    let request = match request {
        Ok(r) => r,
        Err(m) => return report(&mut up, Failure::Setup(m)),
    };
    let flags = match &request {
        Request::Run { spec, .. } | Request::FileOp { spec, .. } => {
            let mut flags = RUN_NAMESPACES;
            if spec.network == Network::None {
                flags |= CloneFlags::CLONE_NEWNET;
            }
            flags
        }
        Request::Task { .. } => CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS,
    };
    if let Err(code) = unshare_or_report(flags, &mut up) {
        return code;
    }
    if up.write_all(&[UNSHARED]).is_err() {
        return 125;
    }
    if let Err(code) = mapped_as_root(down, &mut up) {
        return code;
    }
    let (spec, terminal, op) = match request {
        Request::Run { spec, terminal } => (spec, terminal, None),
        Request::FileOp { spec, op } => (spec, false, Some(op)),
        Request::Task { task, .. } => {
            let reply = match crate::tasks::perform(task) {
                Ok(value) => TaskReply::Done(value),
                Err(message) => TaskReply::Failed(message),
            };
            let _ = up.write_all(&serde_json::to_vec(&reply).unwrap_or_default());
            return 0;
        }
    };

    start_pid1(&spec, terminal, op.as_ref(), up)
}

/// `unshare(flags)`; on failure the report is sent and `Err` holds the
/// helper's exit code.
fn unshare_or_report(flags: CloneFlags, up: &mut File) -> Result<(), i32> {
    unshare(flags).map_err(|e| {
        report(
            up,
            Failure::Setup(format!("unshare: {e} (are user namespaces enabled?)")),
        )
    })
}

/// Wait for the caller's `M` (the ID maps are written, the cgroups
/// joined), close `down`, become container root. `Err` holds the helper's
/// exit code: 125 when the caller gave up (it reports why), else the
/// report of the failure.
fn mapped_as_root(mut down: File, up: &mut File) -> Result<(), i32> {
    let mut byte = [0u8; 1];
    if down.read_exact(&mut byte).is_err() || byte[0] != MAPPED {
        return Err(125);
    }
    drop(down);
    become_container_root().map_err(|message| report(up, Failure::Setup(message)))
}

/// How the helper gets its request.
pub(crate) enum Start {
    /// A forked helper, handed the request in memory.
    Given(Request),
    /// An exec'd helper: the request comes down the pipe first.
    Read,
    /// A helper forked before the sandbox existed (`launch.rs`,
    /// [`crate::launch::EarlyHelper`]): it unshares and is mapped while the
    /// caller creates the sandbox; the request (a run) comes afterwards.
    /// With a mapping, it runs that mapping's map tools itself
    /// (`selfmap.rs`) and says `U` once mapped.
    Early(Option<crate::idmap::IdMapping>),
}

/// The namespaces of every run; a run without a network adds its own.
const RUN_NAMESPACES: CloneFlags = CloneFlags::CLONE_NEWUSER
    .union(CloneFlags::CLONE_NEWNS)
    .union(CloneFlags::CLONE_NEWPID)
    .union(CloneFlags::CLONE_NEWUTS)
    .union(CloneFlags::CLONE_NEWIPC);

/// [`Start::Early`]: unshare the run's namespaces before the request
/// exists, then take the request, the caller's word that the ID maps are
/// written (and the cgroups joined), become container root and start PID 1.
/// A run without a network unshares its network namespace last, from
/// inside the user namespace, which then owns it as it would have if
/// unshared with the rest.
fn serve_early(mut down: File, mut up: File, mapping: Option<crate::idmap::IdMapping>) -> i32 {
    let tools = match mapping.as_ref().map(crate::selfmap::prepare).transpose() {
        Ok(tools) => tools,
        Err(m) => return report(&mut up, Failure::Setup(m)),
    };
    if let Err(code) = unshare_or_report(RUN_NAMESPACES, &mut up) {
        return code;
    }
    if let Some(Err(m)) = tools.map(crate::selfmap::MapTools::run) {
        return report(&mut up, Failure::Setup(m));
    }
    if up.write_all(&[UNSHARED]).is_err() {
        return 125;
    }
    let request = match read_request(&mut down) {
        Ok(r) => r,
        Err(m) => return report(&mut up, Failure::Setup(m)),
    };
    if let Err(code) = mapped_as_root(down, &mut up) {
        return code;
    }
    let (spec, terminal, op) = match request {
        Request::Run { spec, terminal } => (spec, terminal, None),
        Request::FileOp { spec, op } => (spec, false, Some(op)),
        Request::Task { .. } => {
            let refused = "a task sent to a helper started for a run".to_string();
            return report(&mut up, Failure::Setup(refused));
        }
    };
    if spec.network == Network::None {
        if let Err(e) = unshare(CloneFlags::CLONE_NEWNET) {
            return report(&mut up, Failure::Setup(format!("unshare (network): {e}")));
        }
    }
    start_pid1(&spec, terminal, op.as_ref(), up)
}

/// Stack of PID 1 (it shares the helper's memory): mounts, user look-up,
/// the command's start and the report. Touched pages only; a guard page
/// below it.
const PID1_STACK: usize = 8 << 20;

/// What PID 1's entry point needs, on the helper's stack (the helper is
/// suspended while PID 1 lives).
struct Pid1Args<'a> {
    spec: &'a RunSpec,
    terminal: bool,
    op: Option<&'a FileOp>,
    up: RawFd,
}

extern "C" fn pid1_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Pid1Args` on the suspended helper's stack, and
    // `up` this task's own copy of the helper's descriptor.
    let args = unsafe { &*(arg as *const Pid1Args) };
    let up = unsafe { File::from_raw_fd(args.up) };
    let code = pid1_main(args.spec, args.terminal, args.op, up);
    // SAFETY: PID 1 ends here; _exit skips the exit handlers a copy of the
    // caller must not run, and drops nothing of the helper's.
    unsafe { libc::_exit(code) }
}

/// Start PID 1 of the new PID namespace and exit with the command's
/// status once it is gone. PID 1 shares the helper's memory
/// (`CLONE_VM | CLONE_VFORK`, as the command's start in PID 1 does): no
/// copy of the page tables of the helper (a fork of the 26 MB caller), no
/// copy-on-write faults in both, one address space torn down at the end,
/// not two. The helper is suspended until PID 1 exits, so PID 1 may use
/// the heap; signal handlers, credentials and the root are per task. The
/// descriptor table is shared too (`CLONE_FILES`): when PID 1 points its
/// stdio at /dev/null once the command has its copies, the helper holds no
/// copy of the caller's pipes either (a `$(cairn run ...)` sees EOF when
/// the command is done, not after the namespaces' teardown). After PID 1
/// is gone the helper allocates and frees nothing (PID 1 may have been
/// killed inside malloc) and _exits without returning.
fn start_pid1(spec: &RunSpec, terminal: bool, op: Option<&FileOp>, mut up: File) -> i32 {
    use std::os::fd::AsRawFd;
    let Some(stack) = GuardedStack::new(PID1_STACK) else {
        return report(
            &mut up,
            Failure::Setup("no memory for PID 1's stack".into()),
        );
    };
    let mut args = Pid1Args {
        spec,
        terminal,
        op,
        up: up.as_raw_fd(),
    };
    // SAFETY: the helper is single-threaded (an exec'd helper runs
    // init_hook before any thread starts; a forked one is a fork of a
    // single-threaded caller) and suspended until PID 1 exits
    // (CLONE_VFORK), so `args`, what it borrows and `stack` outlive PID 1,
    // and no one else uses the heap meanwhile.
    let pid = unsafe {
        libc::clone(
            pid1_entry,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_FILES | libc::SIGCHLD,
            (&mut args as *mut Pid1Args).cast(),
        )
    };
    if pid < 0 {
        let e = std::io::Error::last_os_error();
        return report(&mut up, Failure::Setup(format!("clone: {e}")));
    }
    // PID 1 has exited (it released the shared stdio and `up`).
    let code = wait_exit_code(Pid::from_raw(pid));
    // SAFETY: no destructor runs (see above); the kernel closes the rest.
    unsafe { libc::_exit(code) }
}

/// An anonymous stack mapping with a PROT_NONE guard page at its bottom.
/// Never unmapped: the helper _exits after PID 1.
struct GuardedStack {
    base: *mut u8,
    len: usize,
}

impl GuardedStack {
    fn new(len: usize) -> Option<Self> {
        // SAFETY: a fresh private anonymous mapping; then its lowest page
        // made inaccessible.
        unsafe {
            let base = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK,
                -1,
                0,
            );
            if base == libc::MAP_FAILED {
                return None;
            }
            if libc::mprotect(base, 4096, libc::PROT_NONE) != 0 {
                libc::munmap(base, len);
                return None;
            }
            Some(GuardedStack {
                base: base.cast(),
                len,
            })
        }
    }

    /// The highest address (stacks grow down), 16-byte aligned.
    fn top(&self) -> *mut libc::c_void {
        // SAFETY: one past the end of the mapping, as clone(2) wants.
        unsafe { self.base.add(self.len) }.cast()
    }
}

/// Point stdin, stdout and stderr at /dev/null: for the helper and PID 1
/// once the command has its own copies, so a caller reading the command's
/// output sees EOF when the command (and what it started) is done, not when
/// the namespaces are torn down.
fn release_stdio() {
    if let Ok(null) = nix::fcntl::open(
        "/dev/null",
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors, which we own.
            unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd) };
        }
    }
}

/// Take on container root's IDs. Rootless, the caller already is the host
/// ID of container root; real root under a shifted mapping is not (its host
/// uid 0 is unmapped in the namespace) and must switch, and must shed host
/// root's supplementary groups, or files it makes would be host root's.
fn become_container_root() -> Result<(), String> {
    // Denied (and unneeded) when only the caller's own ID is mapped.
    let _ = nix::unistd::setgroups(&[]);
    let root_gid = nix::unistd::Gid::from_raw(0);
    let root_uid = nix::unistd::Uid::from_raw(0);
    nix::unistd::setresgid(root_gid, root_gid, root_gid)
        .map_err(|e| format!("becoming container root (setgid 0): {e}"))?;
    let parent = nix::unistd::getppid();
    nix::unistd::setresuid(root_uid, root_uid, root_uid)
        .map_err(|e| format!("becoming container root (setuid 0): {e}"))?;
    // A change of credentials clears the parent-death signal: set it again,
    // or a caller killed now would leave the sandbox running.
    // SAFETY: prctl with an integer signal argument.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    if nix::unistd::getppid() != parent {
        return Err("the caller is gone".into());
    }
    Ok(())
}

fn read_request(down: &mut File) -> Result<Request, String> {
    let mut len = [0u8; 8];
    down.read_exact(&mut len)
        .map_err(|e| format!("reading request: {e}"))?;
    let len = u64::from_le_bytes(len);
    if len > 64 << 20 {
        return Err(format!("request of {len} bytes is too large"));
    }
    let mut body = vec![0u8; len as usize];
    down.read_exact(&mut body)
        .map_err(|e| format!("reading request: {e}"))?;
    serde_json::from_slice(&body).map_err(|e| format!("decoding request: {e}"))
}

/// Send `failure` up (one line) and return its exit code.
fn report(up: &mut File, failure: Failure) -> i32 {
    let code = failure.exit_code();
    if let Ok(mut text) = serde_json::to_vec(&failure) {
        text.push(b'\n');
        let _ = up.write_all(&text);
    }
    code
}

/// Wait for `pid` and turn its end into a shell-style exit code.
fn wait_exit_code(pid: Pid) -> i32 {
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return 125,
        }
    }
}

fn pid1_main(spec: &RunSpec, terminal: bool, op: Option<&FileOp>, mut up: File) -> i32 {
    // If the helper dies (the caller killed it on timeout or cancel), so do we,
    // and with PID 1 the whole namespace.
    // SAFETY: prctl with an integer signal argument.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    match start_command(spec, terminal, op) {
        Err(failure) => report(&mut up, failure),
        Ok(child) => {
            let exec_ns = crate::protocol::monotonic_ns();
            release_stdio();
            let code = reap_until(child);
            // Every process of the sandbox is gone: tell the caller now. Our
            // exit and the helper's wait for the namespaces' teardown
            // (unmounting the overlay, freeing the user namespace), which
            // the caller need not wait for.
            if let Ok(mut text) = serde_json::to_vec(&crate::protocol::Exited { code, exec_ns }) {
                text.push(b'\n');
                let _ = up.write_all(&text);
            }
            code
        }
    }
}

/// Set up the rootfs, then fork and exec the command (or do the file
/// operation); Ok once exec succeeded (the operation was started).
fn start_command(spec: &RunSpec, terminal: bool, op: Option<&FileOp>) -> Result<Pid, Failure> {
    let span = cairn_layer::timing::span("sandbox.pid1_rootfs");
    rootfs::enter(spec, terminal).map_err(|e| Failure::Setup(e.to_string()))?;
    drop(span);
    let span = cairn_layer::timing::span("sandbox.pid1_user_and_program");
    let user = load_user(&spec.process.user).map_err(Failure::Setup)?;
    prepare_cwd(&spec.process.cwd, &user).map_err(Failure::Setup)?;
    let program = match op {
        Some(_) => PathBuf::new(),
        None => resolve_program(&spec.process.args, &spec.process.env)?,
    };
    drop(span);
    let _span = cairn_layer::timing::span("sandbox.pid1_fork_to_exec");

    // The command tells whether exec worked through this pipe: it is
    // close-on-exec, so EOF means success.
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Failure::Setup(format!("pipe: {e}")))?;
    use std::os::fd::AsRawFd;
    let (err_r_fd, err_w_fd) = (err_r.as_raw_fd(), err_w.as_raw_fd());
    // The command's process shares PID 1's memory until its exec (a vfork,
    // as posix_spawn does): no copy of PID 1's page tables (a fork of the
    // 26 MB caller's copy), no copy-on-write faults, and its exec does not
    // tear down a big address space. PID 1 is suspended meanwhile, so the
    // child may use the heap; it never returns (exec or _exit), so nothing
    // PID 1 owns is dropped here. Signal handlers, descriptors, seccomp,
    // credentials and capabilities are per task: set for the child alone.
    // The child runs on PID 1's thread descriptor: glibc's cached tid is
    // PID 1's, so nothing here may raise()/abort() on purpose (the set-up
    // reports failures through the pipe and _exits instead).
    let child_main = move || -> isize {
        // SAFETY: this task's own copy of the descriptor table.
        unsafe { libc::close(err_r_fd) };
        reset_signals();
        let failure = match op {
            // Success exits 0 with the pipe closed unwritten, as an exec does.
            Some(op) => match become_user(spec, &user)
                .and_then(|()| crate::fileop::perform(op).map_err(file_failure))
            {
                // SAFETY: _exit, as after a fork of a caller's copy.
                Ok(()) => unsafe { libc::_exit(0) },
                Err(f) => f,
            },
            None => match terminal.then(crate::console::take_terminal) {
                Some(Err(message)) => Failure::Setup(message),
                _ => exec_command(&program, spec, &user),
            },
        };
        let text = serde_json::to_vec(&failure).unwrap_or_default();
        // SAFETY: writes this task's copy of the pipe's write end.
        unsafe { libc::write(err_w_fd, text.as_ptr().cast(), text.len()) };
        // SAFETY: _exit: no exit handlers of the caller's copy run here.
        unsafe { libc::_exit(failure.exit_code()) }
    };
    let mut stack = vec![0u8; COMMAND_STACK];
    // SAFETY: PID 1 is single-threaded and suspended until the child has
    // exec'd or exited (CLONE_VFORK), so `stack` and what the closure
    // borrows outlive its use.
    let started = unsafe {
        nix::sched::clone(
            Box::new(child_main),
            &mut stack,
            CloneFlags::CLONE_VM | CloneFlags::CLONE_VFORK,
            Some(libc::SIGCHLD),
        )
    };
    match started {
        Err(e) => Err(Failure::Setup(format!("clone: {e}"))),
        Ok(child) => {
            drop(err_w);
            let mut failure_report = Vec::new();
            let _ = File::from(err_r).read_to_end(&mut failure_report);
            match serde_json::from_slice::<Failure>(&failure_report) {
                Ok(f) => {
                    let _ = waitpid(child, None);
                    Err(f)
                }
                Err(_) => Ok(child),
            }
        }
    }
}

/// Stack of the command's process until its exec: the user and
/// capability set-up and, on failure, the report (touched pages only).
const COMMAND_STACK: usize = 1 << 20;

/// Give the command the signal state a fresh process has (as runc does):
/// nothing blocked, nothing ignored. An ignored signal survives exec, and
/// the helper ignores SIGPIPE (Rust's runtime does), so without this
/// `yes | head -1` in the sandbox would end in EPIPE errors, not quietly.
/// The raw syscall, since glibc's `sigaction` refuses the realtime signals
/// it reserves (32 and 33), which a caller may have ignored all the same.
fn reset_signals() {
    /// The kernel's `struct sigaction` on x86-64 and aarch64.
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    let default = KernelSigaction {
        handler: 0, // SIG_DFL
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    // SAFETY: sigprocmask and rt_sigaction with valid pointers; SIGKILL
    // and SIGSTOP are skipped (the kernel refuses them).
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        for sig in (1..=64).filter(|&s| s != libc::SIGKILL && s != libc::SIGSTOP) {
            let no_old: *mut KernelSigaction = std::ptr::null_mut();
            libc::syscall(libc::SYS_rt_sigaction, sig, &default, no_old, 8usize);
        }
    }
}

/// Reap every child until `main` exits; then kill what is left and return
/// `main`'s exit code.
fn reap_until(main: Pid) -> i32 {
    let code = loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == main => break code,
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == main => break 128 + sig as i32,
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break 125,
        }
    };
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    while let Ok(_) | Err(nix::errno::Errno::EINTR) = waitpid(Pid::from_raw(-1), None) {}
    code
}

fn load_user(spec: &str) -> Result<ExecUser, String> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    resolve_user(spec, &passwd, &group).map_err(|e| e.to_string())
}

fn prepare_cwd(cwd: &str, user: &ExecUser) -> Result<(), String> {
    let cwd = if cwd.is_empty() { "/" } else { cwd };
    let path = Path::new(cwd);
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(format!("working directory {cwd} is not a directory")),
        Err(_) => {
            std::fs::create_dir_all(path)
                .map_err(|e| format!("creating working directory {cwd}: {e}"))?;
            // Docker creates a missing working directory owned by the user.
            let _ = nix::unistd::chown(path, Some(user.uid.into()), Some(user.gid.into()));
            Ok(())
        }
    }
}

/// Find the executable for argv[0] in the container's PATH, as the shell would.
fn resolve_program(args: &[String], env: &[String]) -> Result<PathBuf, Failure> {
    let Some(name) = args.first().filter(|a| !a.is_empty()) else {
        return Err(Failure::Setup("no command given".to_string()));
    };
    if name.contains('/') {
        return match std::fs::metadata(name) {
            Ok(_) => Ok(PathBuf::from(name)),
            Err(_) => Err(Failure::NotFound(format!(
                "exec: {name}: no such file or directory"
            ))),
        };
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(name);
        if let Ok(m) = std::fs::metadata(&candidate) {
            if m.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(Failure::NotFound(format!(
        "exec: {name:?}: executable file not found in $PATH"
    )))
}

/// A file operation's error as the run's failure: a missing path is
/// "not found" (127), anything else "cannot execute" (126).
fn file_failure(e: crate::fileop::FileOpError) -> Failure {
    match e.not_found {
        true => Failure::NotFound(e.message),
        false => Failure::CannotExec(e.message),
    }
}

/// Take on the user's groups, IDs and capabilities (with the process
/// limit and the kernel restrictions in between) and enter the working dir.
fn become_user(spec: &RunSpec, user: &ExecUser) -> Result<(), Failure> {
    let groups: Vec<nix::unistd::Gid> = user.groups.iter().map(|g| (*g).into()).collect();
    // setgroups is denied when only one ID is mapped; the user is then root anyway.
    if let Err(e) = nix::unistd::setgroups(&groups) {
        if !spec.id_mapping.single_id {
            return Err(Failure::Setup(format!("setgroups: {e}")));
        }
    }
    if let Err(e) = nix::unistd::setresgid(user.gid.into(), user.gid.into(), user.gid.into()) {
        return Err(Failure::Setup(format!(
            "setgid {}: {e}{}",
            user.gid,
            single_id_hint(spec)
        )));
    }
    if let Some(limit) = spec.pids_limit {
        // Counted per user of the sandbox's user namespace. The kernel exempts
        // real root's uid 0, so as root this bounds the non-root users only.
        let lim = libc::rlimit {
            rlim_cur: limit,
            rlim_max: limit,
        };
        // SAFETY: setrlimit with a valid rlimit struct.
        if unsafe { libc::setrlimit(libc::RLIMIT_NPROC, &lim) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(Failure::Setup(format!("setting the process limit: {e}")));
        }
    }
    if let Err(message) = restrict_kernel(spec) {
        return Err(Failure::Setup(message));
    }
    if let Err(e) = nix::unistd::setresuid(user.uid.into(), user.uid.into(), user.uid.into()) {
        return Err(Failure::Setup(format!(
            "setuid {}: {e}{}",
            user.uid,
            single_id_hint(spec)
        )));
    }
    // Container root keeps the set; any other user gets none (exec would
    // clear them anyway, as Docker's do), and nothing inheritable.
    let caps = if user.uid == 0 {
        spec.security.capabilities
    } else {
        0
    };
    if let Err(message) = crate::caps::set_process_caps(caps) {
        return Err(Failure::Setup(message));
    }
    let cwd = if spec.process.cwd.is_empty() {
        "/"
    } else {
        &spec.process.cwd
    };
    if let Err(e) = std::env::set_current_dir(cwd) {
        return Err(Failure::Setup(format!("chdir {cwd}: {e}")));
    }
    Ok(())
}

/// Drop to the user and exec; returns only on failure.
fn exec_command(program: &Path, spec: &RunSpec, user: &ExecUser) -> Failure {
    if let Err(f) = become_user(spec, user) {
        return f;
    }
    let to_c = |s: &[u8]| {
        CString::new(s).map_err(|_| Failure::Setup("NUL byte in command or environment".into()))
    };
    let prog = match to_c(program.as_os_str().as_bytes()) {
        Ok(p) => p,
        Err(f) => return f,
    };
    let argv: Result<Vec<CString>, Failure> = spec
        .process
        .args
        .iter()
        .map(|a| to_c(a.as_bytes()))
        .collect();
    let envp: Result<Vec<CString>, Failure> = spec
        .process
        .env
        .iter()
        .map(|a| to_c(a.as_bytes()))
        .collect();
    let (argv, envp) = match (argv, envp) {
        (Ok(a), Ok(e)) => (a, e),
        (Err(f), _) | (_, Err(f)) => return f,
    };
    let err = nix::unistd::execve(&prog, &argv, &envp).err();
    let name = program.display();
    match err {
        Some(nix::errno::Errno::ENOENT) => {
            Failure::NotFound(format!("exec: {name}: no such file or directory"))
        }
        Some(e) => Failure::CannotExec(format!("exec: {name}: {e}")),
        None => Failure::CannotExec(format!("exec: {name}: returned")),
    }
}

/// Bounding set, no_new_privs and the seccomp filter, while we are still
/// root of the namespace (installing a filter without no_new_privs needs
/// CAP_SYS_ADMIN there). Every later call (setresuid, capset, execve) is
/// one the filter allows.
fn restrict_kernel(spec: &RunSpec) -> Result<(), String> {
    let security = &spec.security;
    crate::caps::limit_bounding(security.capabilities)?;
    if security.no_new_privileges {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(format!("setting no_new_privs: {e}"));
        }
    }
    if security.seccomp {
        if security.programs.is_empty() {
            return Err("seccomp asked for but no filter was handed over".into());
        }
        for program in &security.programs {
            crate::seccomp::install(program)?;
        }
    }
    Ok(())
}

fn single_id_hint(spec: &RunSpec) -> String {
    if spec.id_mapping.single_id {
        // Inside the sandbox the host's user names are out of sight.
        format!(
            " (only your own ID is mapped: {})",
            crate::idmap::add_range_hint("$USER")
        )
    } else {
        String::new()
    }
}

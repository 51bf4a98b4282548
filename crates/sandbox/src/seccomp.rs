//! The default syscall filter: Docker's default seccomp profile for a
//! container with Docker's default capabilities, as a classic BPF program.
//!
//! The semantics follow moby's `profiles/seccomp/default.json`: an allow
//! list, everything else fails with EPERM. The calls that profile allows
//! only with CAP_SYS_ADMIN and friends (`mount`, `umount2`, `setns`, `bpf`,
//! `perf_event_open`, module loading, `kexec_*`, clock and swap changes,
//! `open_by_handle_at`, `keyctl`/`add_key`/`request_key`, `userfaultfd`, …)
//! are not on the list. `clone` is allowed without namespace flags (threads
//! and forks work); `unshare` likewise, except that a user namespace alone
//! may still be made (nested rootless tools). `clone3` fails with ENOSYS, as
//! in Docker, so that libc falls back to `clone`, whose flags the filter can
//! see. 32-bit x86 and x32 calls are refused (the arch check kills a 32-bit
//! caller; x32 numbers are on no list).
//!
//! The program is compiled once per process (a [`OnceLock`]) by our own
//! emitter ([`emit`]: a binary search over syscall numbers, see
//! docs/sandbox.md for why not seccompiler's linear chain) and handed to the
//! helper as instructions: no sandbox start compiles anything.

mod emit;
#[cfg(test)]
mod interp;
#[cfg(test)]
mod reference;

use emit::Verdict;
use std::sync::OnceLock;

/// A compiled filter as the helper receives it: each instruction packed as
/// `code | jt << 16 | jf << 24 | k << 32`.
pub type Program = Vec<u64>;

/// Namespace flags of clone(2)/unshare(2) that Docker's profile refuses
/// without CAP_SYS_ADMIN.
const NS_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u64;

/// The syscalls Docker's default profile allows unconditionally (the
/// x86_64 ones), plus those it allows to the default capabilities
/// (`chroot` for SYS_CHROOT) and on kernels >= 4.8 (`ptrace`,
/// `process_vm_*`).
const ALLOWED: &[libc::c_long] = &[
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_access,
    libc::SYS_adjtimex,
    libc::SYS_alarm,
    libc::SYS_bind,
    libc::SYS_brk,
    libc::SYS_capget,
    libc::SYS_capset,
    libc::SYS_chdir,
    libc::SYS_chmod,
    libc::SYS_chown,
    libc::SYS_chroot,
    libc::SYS_clock_adjtime,
    libc::SYS_clock_getres,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_close,
    libc::SYS_close_range,
    libc::SYS_connect,
    libc::SYS_copy_file_range,
    libc::SYS_creat,
    libc::SYS_dup,
    libc::SYS_dup2,
    libc::SYS_dup3,
    libc::SYS_epoll_create,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_ctl_old,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_wait_old,
    libc::SYS_eventfd,
    libc::SYS_eventfd2,
    libc::SYS_execve,
    libc::SYS_execveat,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_fadvise64,
    libc::SYS_fallocate,
    libc::SYS_fanotify_mark,
    libc::SYS_fchdir,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    libc::SYS_fchown,
    libc::SYS_fchownat,
    libc::SYS_fcntl,
    libc::SYS_fdatasync,
    libc::SYS_fgetxattr,
    libc::SYS_flistxattr,
    libc::SYS_flock,
    libc::SYS_fork,
    libc::SYS_fremovexattr,
    libc::SYS_fsetxattr,
    libc::SYS_fstat,
    libc::SYS_fstatfs,
    libc::SYS_fsync,
    libc::SYS_ftruncate,
    libc::SYS_futex,
    libc::SYS_futex_waitv,
    libc::SYS_futimesat,
    libc::SYS_getcpu,
    libc::SYS_getcwd,
    libc::SYS_getdents,
    libc::SYS_getdents64,
    libc::SYS_getegid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getgroups,
    libc::SYS_getitimer,
    libc::SYS_getpeername,
    libc::SYS_getpgid,
    libc::SYS_getpgrp,
    libc::SYS_getpid,
    libc::SYS_getppid,
    libc::SYS_getpriority,
    libc::SYS_getrandom,
    libc::SYS_getresgid,
    libc::SYS_getresuid,
    libc::SYS_getrlimit,
    libc::SYS_get_robust_list,
    libc::SYS_getrusage,
    libc::SYS_getsid,
    libc::SYS_getsockname,
    libc::SYS_getsockopt,
    libc::SYS_get_thread_area,
    libc::SYS_gettid,
    libc::SYS_gettimeofday,
    libc::SYS_getuid,
    libc::SYS_getxattr,
    libc::SYS_inotify_add_watch,
    libc::SYS_inotify_init,
    libc::SYS_inotify_init1,
    libc::SYS_inotify_rm_watch,
    libc::SYS_io_cancel,
    libc::SYS_ioctl,
    libc::SYS_io_destroy,
    libc::SYS_io_getevents,
    333, // io_pgetevents (not in libc)
    libc::SYS_ioprio_get,
    libc::SYS_ioprio_set,
    libc::SYS_io_setup,
    libc::SYS_io_submit,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_io_uring_setup,
    libc::SYS_kill,
    libc::SYS_landlock_add_rule,
    libc::SYS_landlock_create_ruleset,
    libc::SYS_landlock_restrict_self,
    libc::SYS_lchown,
    libc::SYS_lgetxattr,
    libc::SYS_link,
    libc::SYS_linkat,
    libc::SYS_listen,
    libc::SYS_listxattr,
    libc::SYS_llistxattr,
    libc::SYS_lremovexattr,
    libc::SYS_lseek,
    libc::SYS_lsetxattr,
    libc::SYS_lstat,
    libc::SYS_madvise,
    libc::SYS_membarrier,
    libc::SYS_memfd_create,
    libc::SYS_memfd_secret,
    libc::SYS_mincore,
    libc::SYS_mkdir,
    libc::SYS_mkdirat,
    libc::SYS_mknod,
    libc::SYS_mknodat,
    libc::SYS_mlock,
    libc::SYS_mlock2,
    libc::SYS_mlockall,
    libc::SYS_mmap,
    libc::SYS_mprotect,
    libc::SYS_mq_getsetattr,
    libc::SYS_mq_notify,
    libc::SYS_mq_open,
    libc::SYS_mq_timedreceive,
    libc::SYS_mq_timedsend,
    libc::SYS_mq_unlink,
    libc::SYS_mremap,
    libc::SYS_msgctl,
    libc::SYS_msgget,
    libc::SYS_msgrcv,
    libc::SYS_msgsnd,
    libc::SYS_msync,
    libc::SYS_munlock,
    libc::SYS_munlockall,
    libc::SYS_munmap,
    libc::SYS_name_to_handle_at,
    libc::SYS_nanosleep,
    libc::SYS_newfstatat,
    libc::SYS_open,
    libc::SYS_openat,
    libc::SYS_openat2,
    libc::SYS_pause,
    libc::SYS_pidfd_open,
    libc::SYS_pidfd_send_signal,
    libc::SYS_pipe,
    libc::SYS_pipe2,
    libc::SYS_pkey_alloc,
    libc::SYS_pkey_free,
    libc::SYS_pkey_mprotect,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_prctl,
    libc::SYS_pread64,
    libc::SYS_preadv,
    libc::SYS_preadv2,
    libc::SYS_prlimit64,
    libc::SYS_process_mrelease,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_pselect6,
    libc::SYS_ptrace,
    libc::SYS_pwrite64,
    libc::SYS_pwritev,
    libc::SYS_pwritev2,
    libc::SYS_read,
    libc::SYS_readahead,
    libc::SYS_readlink,
    libc::SYS_readlinkat,
    libc::SYS_readv,
    libc::SYS_recvfrom,
    libc::SYS_recvmmsg,
    libc::SYS_recvmsg,
    libc::SYS_remap_file_pages,
    libc::SYS_removexattr,
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_restart_syscall,
    libc::SYS_rmdir,
    libc::SYS_rseq,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigpending,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigqueueinfo,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigsuspend,
    libc::SYS_rt_sigtimedwait,
    libc::SYS_rt_tgsigqueueinfo,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_getattr,
    libc::SYS_sched_getparam,
    libc::SYS_sched_get_priority_max,
    libc::SYS_sched_get_priority_min,
    libc::SYS_sched_getscheduler,
    libc::SYS_sched_rr_get_interval,
    libc::SYS_sched_setaffinity,
    libc::SYS_sched_setattr,
    libc::SYS_sched_setparam,
    libc::SYS_sched_setscheduler,
    libc::SYS_sched_yield,
    libc::SYS_seccomp,
    libc::SYS_select,
    libc::SYS_semctl,
    libc::SYS_semget,
    libc::SYS_semop,
    libc::SYS_semtimedop,
    libc::SYS_sendfile,
    libc::SYS_sendmmsg,
    libc::SYS_sendmsg,
    libc::SYS_sendto,
    libc::SYS_setfsgid,
    libc::SYS_setfsuid,
    libc::SYS_setgid,
    libc::SYS_setgroups,
    libc::SYS_setitimer,
    libc::SYS_setpgid,
    libc::SYS_setpriority,
    libc::SYS_setregid,
    libc::SYS_setresgid,
    libc::SYS_setresuid,
    libc::SYS_setreuid,
    libc::SYS_setrlimit,
    libc::SYS_set_robust_list,
    libc::SYS_setsid,
    libc::SYS_setsockopt,
    libc::SYS_set_thread_area,
    libc::SYS_set_tid_address,
    libc::SYS_setuid,
    libc::SYS_setxattr,
    libc::SYS_shmat,
    libc::SYS_shmctl,
    libc::SYS_shmdt,
    libc::SYS_shmget,
    libc::SYS_shutdown,
    libc::SYS_sigaltstack,
    libc::SYS_signalfd,
    libc::SYS_signalfd4,
    libc::SYS_socketpair,
    libc::SYS_splice,
    libc::SYS_stat,
    libc::SYS_statfs,
    libc::SYS_statx,
    libc::SYS_symlink,
    libc::SYS_symlinkat,
    libc::SYS_sync,
    libc::SYS_sync_file_range,
    libc::SYS_syncfs,
    libc::SYS_sysinfo,
    libc::SYS_tee,
    libc::SYS_tgkill,
    libc::SYS_time,
    libc::SYS_timer_create,
    libc::SYS_timer_delete,
    libc::SYS_timer_getoverrun,
    libc::SYS_timer_gettime,
    libc::SYS_timer_settime,
    libc::SYS_timerfd_create,
    libc::SYS_timerfd_gettime,
    libc::SYS_timerfd_settime,
    libc::SYS_times,
    libc::SYS_tkill,
    libc::SYS_truncate,
    libc::SYS_umask,
    libc::SYS_uname,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    libc::SYS_utime,
    libc::SYS_utimensat,
    libc::SYS_utimes,
    libc::SYS_vfork,
    libc::SYS_vmsplice,
    libc::SYS_wait4,
    libc::SYS_waitid,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_arch_prctl,
    libc::SYS_modify_ldt,
    // Allowed here so that only the ENOSYS filter answers it.
    libc::SYS_clone3,
];

/// The programs to install, in order: one, compiled on first use. It is
/// the allow list (EPERM otherwise) with `clone3` answered by ENOSYS; the
/// two used to be separate filters, whose combined answer (the kernel takes
/// the stricter one) is exactly this program's.
pub fn default_programs() -> Result<&'static [Program], String> {
    static PROGRAMS: OnceLock<Result<Vec<Program>, String>> = OnceLock::new();
    PROGRAMS
        .get_or_init(|| Ok(vec![emit::compile(&default_table())?]))
        .as_ref()
        .map(Vec::as_slice)
        .map_err(Clone::clone)
}

/// Docker's profile as one verdict per syscall number (numbers not in the
/// table, x32's and 32-bit ones included, get EPERM).
fn default_table() -> Vec<(u32, Verdict)> {
    let mut table: Vec<(u32, Verdict)> = ALLOWED
        .iter()
        .filter(|nr| **nr != libc::SYS_clone3)
        .map(|nr| (*nr as u32, Verdict::Allow))
        .collect();
    table.push((libc::SYS_clone3 as u32, Verdict::Errno(libc::ENOSYS as u32)));
    table.push((libc::SYS_clone as u32, Verdict::Arg0NoneOf(NS_FLAGS as u32)));
    let user = libc::CLONE_NEWUSER as u32;
    let unshare_flags = NS_FLAGS as u32 & !user;
    table.push((libc::SYS_unshare as u32, Verdict::Arg0NoneOf(unshare_flags)));
    // AF_VSOCK (40) is the one address family Docker refuses.
    table.push((libc::SYS_socket as u32, Verdict::Arg0Not(40)));
    // personality(2): only the values Docker lets through (query, Linux,
    // UNAME26, their combination, 0xffffffff).
    table.push((
        libc::SYS_personality as u32,
        Verdict::Arg0OneOf(PERSONALITIES),
    ));
    table
}

/// The personality(2) values Docker's profile allows.
const PERSONALITIES: &[u32] = &[0, 8, 0x20000, 0x20008, 0xffff_ffff];

/// Install `program` in the calling thread (and so in what it execs).
/// Needs CAP_SYS_ADMIN in the user namespace or no_new_privs.
pub fn install(program: &[u64]) -> Result<(), String> {
    let insns: Vec<libc::sock_filter> = program
        .iter()
        .map(|w| libc::sock_filter {
            code: *w as u16,
            jt: (*w >> 16) as u8,
            jf: (*w >> 24) as u8,
            k: (*w >> 32) as u32,
        })
        .collect();
    let prog = libc::sock_fprog {
        len: insns.len() as libc::c_ushort,
        filter: insns.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at `insns`, which outlives the call; the kernel
    // copies the program.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(format!(
            "installing the seccomp filter: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_compiles_short_and_fits_the_kernel_limit() {
        let programs = default_programs().unwrap();
        assert_eq!(programs.len(), 1);
        // A binary search: a few hundred instructions at most (seccompiler's
        // linear chain was 1,541).
        assert!(
            programs[0].len() < 400,
            "{} instructions",
            programs[0].len()
        );
    }

    /// The new program answers exactly as the old seccompiler-built pair
    /// did (the kernel's rule for stacked filters: the stricter answer
    /// wins), for every syscall number 0..=450, their x32 twins, other
    /// architectures, and the argument-conditioned calls with allowed and
    /// refused arguments (high halves set too).
    #[test]
    fn decisions_match_the_seccompiler_reference() {
        let new = &default_programs().unwrap()[0];
        let old = reference::programs();
        let arches = [interp::AUDIT_ARCH_X86_64, 0x4000_0003, 0xC000_00B7, 0];
        let mut args0: Vec<u64> = vec![0, 1, 8, 40, 41, 0x20000, 0x20008, 0xffff_ffff];
        args0.extend([
            0x1_0000_0000,
            0xffff_ffff_0000_0028,
            u64::MAX,
            0x8000_0000_0000_0000,
        ]);
        for flag in [
            libc::CLONE_NEWNS,
            libc::CLONE_NEWCGROUP,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET,
            libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND,
        ] {
            let f = flag as u32 as u64;
            args0.extend([f, f | libc::SIGCHLD as u64, f | 0x7_0000_0000]);
        }
        let mut checked = 0;
        for arch in arches {
            for base in 0..=450u32 {
                for nr in [base, base | 0x4000_0000] {
                    for &a0 in &args0 {
                        let data = interp::Data {
                            nr,
                            arch,
                            args: [a0, 7, 0, 0, 0, 0],
                        };
                        let want = old
                            .iter()
                            .map(|p| interp::run(p, &data))
                            .min_by_key(|r| interp::strictness(*r));
                        let got = interp::run(new, &data);
                        assert_eq!(Some(got), want, "nr {nr:#x} arch {arch:#x} arg0 {a0:#x}");
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 100_000);
        // The table really refuses something and allows something.
        let data = |nr: i64, a0: u64| interp::Data {
            nr: nr as u32,
            arch: interp::AUDIT_ARCH_X86_64,
            args: [a0, 0, 0, 0, 0, 0],
        };
        assert_eq!(
            interp::run(new, &data(libc::SYS_read, 0)),
            interp::RET_ALLOW
        );
        assert_eq!(
            interp::run(new, &data(libc::SYS_mount, 0)),
            interp::RET_ERRNO | libc::EPERM as u32
        );
        assert_eq!(
            interp::run(new, &data(libc::SYS_clone3, 0)),
            interp::RET_ERRNO | libc::ENOSYS as u32
        );
        let newns = libc::CLONE_NEWNS as u64;
        assert_eq!(
            interp::run(new, &data(libc::SYS_clone, newns)),
            interp::RET_ERRNO | libc::EPERM as u32
        );
    }
}

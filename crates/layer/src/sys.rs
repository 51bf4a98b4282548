//! Thin, safe wrappers over the few Linux calls std does not offer: xattrs by
//! path without following links, and the `*at` family used by extraction.
//! Every wrapper takes a directory fd plus a single path component (never a
//! path with `/`), so nothing here can be steered outside that directory.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in name"))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// All xattrs of `path` (not following a final symlink), sorted by name.
pub fn list_xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let c = cstring(path.as_os_str().as_bytes())?;
    let mut names = vec![0u8; 1024];
    let len = loop {
        // SAFETY: c is NUL-terminated; names is a valid buffer of the given length.
        let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        if n >= 0 {
            break n as usize;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ERANGE) => names.resize(names.len() * 4, 0),
            // Filesystems without xattr support simply have none.
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(err),
        }
        if names.len() > 1 << 24 {
            return Err(err);
        }
    };
    let mut out = Vec::new();
    for name in names[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        match get_xattr(&c, name)? {
            Some(value) => out.push((name.to_vec(), value)),
            None => continue, // removed between list and get
        }
    }
    out.sort();
    Ok(out)
}

/// `listxattrat(2)` (Linux 6.13), x86_64 and the generic table alike.
const SYS_LISTXATTRAT: libc::c_long = 465;

/// Whether `listxattrat` answered ENOSYS (an older kernel) or EPERM (a
/// seccomp filter that does not know it): then names go by path.
static NO_LISTXATTRAT: AtomicBool = AtomicBool::new(false);

/// All xattrs of `name` in `dir` (not following a final symlink), sorted:
/// [`list_xattrs`] without a lookup of the whole path when the kernel has
/// `listxattrat`. Nearly every node has none, so the values (one more call
/// each) are read through `/proc/self/fd/DIR/NAME`: a short path however
/// deep the node is (its full path may be longer than PATH_MAX).
pub fn list_xattrs_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    if !NO_LISTXATTRAT.load(Ordering::Relaxed) {
        let c = cstring(name)?;
        let mut names = [0u8; 256];
        // SAFETY: c is NUL-terminated; names is valid for its length; the
        // kernel writes at most that many bytes.
        let n = unsafe {
            libc::syscall(
                SYS_LISTXATTRAT,
                dir.as_raw_fd(),
                c.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW as libc::c_uint,
                names.as_mut_ptr(),
                names.len(),
            )
        };
        if n == 0 {
            return Ok(Vec::new());
        }
        if n < 0 {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::ENOSYS) | Some(libc::EPERM) => {
                    NO_LISTXATTRAT.store(true, Ordering::Relaxed)
                }
                Some(libc::ENOTSUP) => return Ok(Vec::new()),
                // ERANGE (a long list) and real errors: the path-based call
                // sizes its buffer and reports the error the same way.
                _ => {}
            }
        }
    }
    list_xattrs(&proc_fd_path(dir, name))
}

/// `/proc/self/fd/DIR/NAME`: `name` in the directory `dir` for the calls
/// that only take a path (the magic link is the directory we hold).
fn proc_fd_path(dir: BorrowedFd<'_>, name: &[u8]) -> std::path::PathBuf {
    let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    path.extend_from_slice(name);
    std::path::PathBuf::from(std::ffi::OsString::from_vec(path))
}

/// `statx` of `name` in `dir` without following a final symlink, asking
/// only for what a layer entry records.
pub fn statx_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<libc::statx> {
    let mask = libc::STATX_TYPE
        | libc::STATX_MODE
        | libc::STATX_NLINK
        | libc::STATX_UID
        | libc::STATX_GID
        | libc::STATX_MTIME
        | libc::STATX_INO
        | libc::STATX_SIZE;
    statx_masked(dir, &cstring(name)?, mask)
}

/// `statx` of `name` in `dir` without following a final symlink, asking
/// for the fields in `mask` (the build context's scan asks for others than
/// a layer entry; a `CStr` spares a hot walk one copy of each name).
pub fn statx_masked(dir: BorrowedFd<'_>, name: &CStr, mask: u32) -> io::Result<libc::statx> {
    // SAFETY: an all-zero statx is a valid out-parameter.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: name is NUL-terminated; st is a valid out-pointer.
    check(unsafe {
        libc::statx(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
            mask,
            &mut st,
        )
    })?;
    Ok(st)
}

/// The target of the symlink `name` in `dir`; `hint` is its lstat size
/// (0 when unknown), so one call reads it. Shared with the builder's tree
/// copy (re-exported as `cairn_layer::readlinkat`).
pub fn readlinkat(dir: BorrowedFd<'_>, name: &[u8], hint: usize) -> io::Result<Vec<u8>> {
    let c = cstring(name)?;
    // One byte more than the target: a full buffer may mean truncation.
    let mut buf = vec![0u8; hint.max(255) + 1];
    loop {
        // SAFETY: c is NUL-terminated; buf is valid for buf.len() bytes.
        let n = unsafe {
            libc::readlinkat(
                dir.as_raw_fd(),
                c.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        if n < buf.len() {
            buf.truncate(n);
            return Ok(buf);
        }
        if buf.len() >= 1 << 16 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "symlink target too long",
            ));
        }
        buf.resize(buf.len() * 4, 0);
    }
}

fn get_xattr(path: &CString, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let cname = cstring(name)?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: both strings are NUL-terminated; buf is valid for buf.len() bytes.
        let n = unsafe {
            libc::lgetxattr(
                path.as_ptr(),
                cname.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(Some(buf));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 8, 0),
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => return Ok(None),
            _ => return Err(err),
        }
    }
}

/// Set an xattr on an open (non-`O_PATH`) fd.
pub fn fsetxattr(fd: BorrowedFd<'_>, name: &[u8], value: &[u8]) -> io::Result<()> {
    let cname = cstring(name)?;
    // SAFETY: cname is NUL-terminated; value is valid for value.len() bytes.
    check(unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            cname.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
    .map(drop)
}

/// Set an xattr on `name` inside the directory `dir` without following `name`
/// if it is a symlink. Goes through `/proc/self/fd/DIR/NAME`: the magic link
/// resolves to the directory we hold, and `name` is a single component.
pub fn lsetxattr_at(dir: BorrowedFd<'_>, name: &[u8], key: &[u8], value: &[u8]) -> io::Result<()> {
    let cpath = cstring(proc_fd_path(dir, name).as_os_str().as_bytes())?;
    let ckey = cstring(key)?;
    // SAFETY: strings are NUL-terminated; value is valid for value.len() bytes.
    check(unsafe {
        libc::lsetxattr(
            cpath.as_ptr(),
            ckey.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
    .map(drop)
}

/// `openat` relative to `dir`; `name` must be one component.
pub fn openat(
    dir: BorrowedFd<'_>,
    name: &[u8],
    flags: libc::c_int,
    mode: u32,
) -> io::Result<OwnedFd> {
    let c = cstring(name)?;
    // SAFETY: c is NUL-terminated; the returned fd is owned by us.
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: fd was just returned by openat and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Open `path` (relative, may contain `/`) beneath `root` with `RESOLVE_IN_ROOT`:
/// `..` and absolute symlinks are resolved as if `root` were `/`, so the result
/// is always inside `root`. Magic links (/proc) are refused. `mode` is the
/// mode of a file `O_CREAT` makes.
pub fn openat2_in_root(
    root: BorrowedFd<'_>,
    path: &[u8],
    flags: libc::c_int,
    mode: u32,
) -> io::Result<OwnedFd> {
    let resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    openat2(root, path, flags, mode, resolve)
}

/// `openat2` of `path` below `dir` with no symlink followed anywhere and
/// no way above `dir`: the rest of a path too long for one call, once its
/// head was resolved in the root.
pub fn openat2_beneath_no_symlinks(
    dir: BorrowedFd<'_>,
    path: &[u8],
    flags: libc::c_int,
) -> io::Result<OwnedFd> {
    openat2(
        dir,
        path,
        flags,
        0,
        libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS,
    )
}

fn openat2(
    root: BorrowedFd<'_>,
    path: &[u8],
    flags: libc::c_int,
    mode: u32,
    resolve: u64,
) -> io::Result<OwnedFd> {
    let c = cstring(path)?;
    // SAFETY: open_how is plain data; all-zero is its documented default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = u64::from(mode);
    how.resolve = resolve;
    // SAFETY: c is NUL-terminated; how is a valid open_how of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a non-negative return is a new fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

pub fn mkdirat(dir: BorrowedFd<'_>, name: &[u8], mode: u32) -> io::Result<()> {
    let c = cstring(name)?;
    // SAFETY: c is NUL-terminated.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode as libc::mode_t) }).map(drop)
}

pub fn mknodat(dir: BorrowedFd<'_>, name: &[u8], mode: u32, dev: libc::dev_t) -> io::Result<()> {
    let c = cstring(name)?;
    // SAFETY: c is NUL-terminated.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), c.as_ptr(), mode as libc::mode_t, dev) })
        .map(drop)
}

pub fn symlinkat(target: &[u8], dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    let t = cstring(target)?;
    let c = cstring(name)?;
    // SAFETY: both strings are NUL-terminated.
    check(unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), c.as_ptr()) }).map(drop)
}

/// Hard link without following a symlink at the source (flags 0).
pub fn linkat(
    src_dir: BorrowedFd<'_>,
    src: &[u8],
    dst_dir: BorrowedFd<'_>,
    dst: &[u8],
) -> io::Result<()> {
    let s = cstring(src)?;
    let d = cstring(dst)?;
    // SAFETY: both strings are NUL-terminated.
    check(unsafe {
        libc::linkat(
            src_dir.as_raw_fd(),
            s.as_ptr(),
            dst_dir.as_raw_fd(),
            d.as_ptr(),
            0,
        )
    })
    .map(drop)
}

pub fn unlinkat(dir: BorrowedFd<'_>, name: &[u8], remove_dir: bool) -> io::Result<()> {
    let c = cstring(name)?;
    let flags = if remove_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: c is NUL-terminated.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), flags) }).map(drop)
}

/// `fstatat` without following a final symlink; `None` if it does not exist.
pub fn lstatat(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Option<libc::stat>> {
    let c = cstring(name)?;
    // SAFETY: zeroed stat is a valid out-parameter.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: c is NUL-terminated; st is a valid out-pointer.
    let r = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            c.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r < 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENOENT) => Ok(None),
            _ => Err(err),
        };
    }
    Ok(Some(st))
}

/// `fchownat` without following a final symlink.
pub fn lchownat(dir: BorrowedFd<'_>, name: &[u8], uid: u32, gid: u32) -> io::Result<()> {
    let c = cstring(name)?;
    // SAFETY: c is NUL-terminated.
    check(unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            c.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

pub fn fchown(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: plain syscall on a valid fd.
    check(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) }).map(drop)
}

pub fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    // SAFETY: plain syscall on a valid fd.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) }).map(drop)
}

/// chmod of `name` in `dir`. Only used for fifos and device nodes we have just
/// created (symlinks have no mode of their own on Linux).
pub fn fchmodat(dir: BorrowedFd<'_>, name: &[u8], mode: u32) -> io::Result<()> {
    let c = cstring(name)?;
    // SAFETY: c is NUL-terminated.
    check(unsafe { libc::fchmodat(dir.as_raw_fd(), c.as_ptr(), mode as libc::mode_t, 0) }).map(drop)
}

fn timespecs(mtime: i64) -> [libc::timespec; 2] {
    let t = libc::timespec {
        tv_sec: mtime as libc::time_t,
        tv_nsec: 0,
    };
    [t, t]
}

/// Set atime and mtime of `name` in `dir` without following a symlink.
pub fn lutimesat(dir: BorrowedFd<'_>, name: &[u8], mtime: i64) -> io::Result<()> {
    let c = cstring(name)?;
    let ts = timespecs(mtime);
    // SAFETY: c is NUL-terminated; ts has two entries.
    check(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

pub fn futimes(fd: BorrowedFd<'_>, mtime: i64) -> io::Result<()> {
    let ts = timespecs(mtime);
    // SAFETY: ts has two entries; fd is valid.
    check(unsafe { libc::futimens(fd.as_raw_fd(), ts.as_ptr()) }).map(drop)
}

/// Ask the kernel to start writing `len` bytes at `from` back to disk,
/// without waiting. Best effort: a filesystem without it loses only the
/// head start (the store's `syncfs` still makes the data durable).
pub fn start_writeback(fd: BorrowedFd<'_>, from: u64, len: u64) {
    // SAFETY: sync_file_range only reads its integer arguments; `fd` is
    // borrowed open for the whole call.
    let _ = unsafe {
        libc::sync_file_range(
            fd.as_raw_fd(),
            from as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
}

/// Names in the directory `fd` (without `.` and `..`).
pub fn read_dir_names(dir: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    // A fresh open description: `dir` may be O_PATH, and its offset is
    // not ours to move.
    let fd = openat(dir, b".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    dir_names(fd.as_fd())
}

/// Names in the directory open for reading as `fd`, from its current
/// offset (a fresh descriptor: all of them), without `.` and `..`:
/// `getdents64` into one buffer, a call per 32 KiB of names.
pub fn dir_names(fd: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    // linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type, name + NUL.
    const NAME_AT: usize = 19;
    let mut buf = vec![0u8; 32 * 1024];
    let mut names = Vec::new();
    loop {
        // SAFETY: buf is valid for buf.len() bytes; the kernel writes at
        // most that many.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                fd.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Ok(names);
        }
        let mut at = 0;
        while at + NAME_AT <= n as usize {
            let reclen = usize::from(u16::from_ne_bytes([buf[at + 16], buf[at + 17]]));
            let rec = buf.get(at + NAME_AT..at + reclen).unwrap_or_default();
            let name = &rec[..rec.iter().position(|&b| b == 0).unwrap_or(rec.len())];
            if name != b"." && name != b".." {
                names.push(name.to_vec());
            }
            if reclen == 0 {
                return Err(io::Error::other("getdents64: a record of length 0"));
            }
            at += reclen;
        }
    }
}

/// Paths at least this long are opened a piece at a time (PATH_MAX is
/// 4096 with its NUL).
pub const LONG_PATH: usize = 4000;

/// Open `path`, which may be longer than one call takes: `head` opens
/// its first piece (shorter than [`LONG_PATH`], cut at a `/`) as a
/// directory, and the rest is opened below it in pieces with no symlink
/// followed and no way above it (component by component without
/// openat2). A short path is `head`'s alone.
pub fn open_in_pieces(
    path: &[u8],
    flags: libc::c_int,
    head: &dyn Fn(&[u8], libc::c_int) -> io::Result<OwnedFd>,
) -> io::Result<OwnedFd> {
    let walk = libc::O_PATH | libc::O_DIRECTORY;
    let mut cur: Option<OwnedFd> = None;
    let mut rest = path;
    while !rest.is_empty() {
        let cut = if rest.len() < LONG_PATH {
            rest.len()
        } else {
            match rest[..LONG_PATH].iter().rposition(|&b| b == b'/') {
                Some(i) if i > 0 => i,
                _ => return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG)),
            }
        };
        let f = if cut == rest.len() { flags } else { walk };
        let next = match &cur {
            None => head(&rest[..cut], f)?,
            Some(fd) => open_beneath(fd.as_fd(), &rest[..cut], f)?,
        };
        cur = Some(next);
        rest = rest.get(cut + 1..).unwrap_or_default();
    }
    cur.ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
}

/// `path` below `dir`, no symlink followed: one openat2 call, or a
/// component at a time on kernels without it.
fn open_beneath(dir: BorrowedFd<'_>, path: &[u8], flags: libc::c_int) -> io::Result<OwnedFd> {
    if has_openat2() {
        return openat2_beneath_no_symlinks(dir, path, flags);
    }
    let comps: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
    let mut cur = openat(dir, b".", libc::O_PATH | libc::O_DIRECTORY, 0)?;
    for (i, comp) in comps.iter().enumerate() {
        let f = if i + 1 == comps.len() {
            flags
        } else {
            libc::O_PATH | libc::O_DIRECTORY
        };
        cur = openat(cur.as_fd(), comp, f | libc::O_NOFOLLOW, 0)?;
    }
    Ok(cur)
}

/// `path` (relative, of any length) below `dir`, with no symlink followed
/// and no way above `dir`.
pub fn open_beneath_long(
    dir: BorrowedFd<'_>,
    path: &[u8],
    flags: libc::c_int,
) -> io::Result<OwnedFd> {
    open_in_pieces(path, flags, &|head, f| open_beneath(dir, head, f))
}

/// Open the file at `path` (absolute or relative to the working
/// directory, of any length) with `flags`; past [`LONG_PATH`] in pieces,
/// the head by path as any short path, the rest with no symlink followed.
/// Opens what exists (no `O_CREAT`: use [`openat`] on its directory).
pub fn open_long_path(path: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    open_in_pieces(path.as_os_str().as_bytes(), flags, &|piece, f| {
        let c = cstring(piece)?;
        // SAFETY: c is NUL-terminated; the returned fd is owned by us.
        let fd = check(unsafe { libc::open(c.as_ptr(), f | libc::O_CLOEXEC, 0) })?;
        // SAFETY: fd was just returned by open and is not owned elsewhere.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    })
}

/// Whether the kernel offers openat2 (Linux 5.6+), probed once.
pub fn has_openat2() -> bool {
    use std::sync::OnceLock;
    static PROBE: OnceLock<bool> = OnceLock::new();
    *PROBE.get_or_init(|| {
        let Ok(root) = std::fs::File::open("/") else {
            return false;
        };
        // SAFETY: root stays open for the duration of the borrow.
        let fd = unsafe { BorrowedFd::borrow_raw(root.as_raw_fd()) };
        !matches!(
            openat2_in_root(fd, b".", libc::O_PATH | libc::O_DIRECTORY, 0),
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS)
        )
    })
}

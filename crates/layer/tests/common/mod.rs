//! Helpers shared by the integration tests: building trees with every file
//! type, snapshotting a tree for comparison, and listing a layer's entries.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        r,
        0,
        "setxattr {name} on {path:?}: {}",
        std::io::Error::last_os_error()
    );
}

pub fn mknod(path: &Path, mode: u32, dev: u64) {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let r = unsafe { libc::mknod(p.as_ptr(), mode, dev) };
    assert_eq!(r, 0, "mknod {path:?}: {}", std::io::Error::last_os_error());
}

pub fn lchown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

pub fn set_mtime(path: &Path, secs: i64) {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let t = libc::timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            p.as_ptr(),
            [t, t].as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(r, 0);
}

/// A v3 file capability blob granting cap_net_bind_service (as setcap writes it, v2 form).
pub const CAP_NET_BIND: [u8; 20] = [0, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/// A tree with every file type, odd modes, owners, xattrs, hard links and long
/// names. Device nodes and foreign owners only as root.
pub fn make_every_type(root: &Path, mtime: i64) {
    let root_user = is_root();
    fs::create_dir_all(root.join("etc/sub")).unwrap();
    fs::write(root.join("etc/hello.txt"), b"hello world\n").unwrap();
    fs::write(root.join("etc/empty"), b"").unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(root.join("etc/sub/big.bin"), &big).unwrap();
    symlink("hello.txt", root.join("etc/link")).unwrap();
    symlink("/etc/passwd", root.join("etc/abs-link")).unwrap();
    symlink("does/not/exist", root.join("dangling")).unwrap();
    fs::hard_link(root.join("etc/hello.txt"), root.join("hardlink-to-hello")).unwrap();
    fs::hard_link(root.join("etc/hello.txt"), root.join("etc/sub/hl2")).unwrap();
    let fifo = CString::new(root.join("fifo").as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);
    for (name, mode) in [
        ("m0000", 0o0000),
        ("m4755", 0o4755),
        ("m2755", 0o2755),
        ("m1777", 0o1777),
        ("m0644", 0o644),
    ] {
        fs::write(root.join(name), name.as_bytes()).unwrap();
        fs::set_permissions(root.join(name), fs::Permissions::from_mode(mode)).unwrap();
    }
    fs::create_dir(root.join("sticky-dir")).unwrap();
    fs::set_permissions(root.join("sticky-dir"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::create_dir(root.join("ro-dir")).unwrap();
    fs::write(root.join("ro-dir/inside"), b"x").unwrap();
    fs::set_permissions(root.join("ro-dir"), fs::Permissions::from_mode(0o555)).unwrap();
    // Long names: a 150-byte component, a >255-byte path, unicode.
    let long_comp = "l".repeat(150);
    let deep = root.join(format!(
        "{}/{}/{}",
        "d".repeat(120),
        "e".repeat(120),
        "f".repeat(50)
    ));
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join(&long_comp), b"deep").unwrap();
    symlink("t".repeat(200), root.join("long-target-link")).unwrap();
    fs::write(root.join("ünïcødé-名前.txt"), "ünïcødé".as_bytes()).unwrap();
    fs::write(root.join("with space & 'quotes'"), b"q").unwrap();
    set_xattr(&root.join("etc/hello.txt"), "user.comment", b"greeting");
    set_xattr(&root.join("etc"), "user.dir-attr", b"\x00\x01binary\xff");
    if root_user {
        set_xattr(&root.join("m4755"), "security.capability", &CAP_NET_BIND);
        mknod(
            &root.join("null-dev"),
            libc::S_IFCHR | 0o666,
            libc::makedev(1, 3),
        );
        mknod(
            &root.join("blk-dev"),
            libc::S_IFBLK | 0o660,
            libc::makedev(7, 0),
        );
        lchown(&root.join("etc/hello.txt"), 1000, 1000);
        lchown(&root.join("m0644"), 65534, 65534);
        lchown(&root.join("etc/link"), 1000, 50);
        lchown(&root.join("sticky-dir"), 1000, 1000);
        lchown(&root.join("m4755"), 0, 1000);
        // chown clears setuid: restore it and the capability afterwards.
        fs::set_permissions(root.join("m4755"), fs::Permissions::from_mode(0o4755)).unwrap();
        set_xattr(&root.join("m4755"), "security.capability", &CAP_NET_BIND);
    }
    set_times(root, mtime);
}

/// Set every mtime under root (not root itself) to `mtime`.
pub fn set_times(root: &Path, mtime: i64) {
    let mut stack = vec![root.to_path_buf()];
    let mut all = Vec::new();
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p.clone());
            }
            all.push(p);
        }
    }
    // Deepest first so setting a file does not disturb... (mtime of dirs is
    // not changed by utimensat on children, order is only for tidiness).
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in all {
        set_mtime(&p, mtime);
    }
}

/// Everything a layer must preserve about one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFacts {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub content: Option<Vec<u8>>,
    pub link: Option<Vec<u8>>,
    pub rdev: u64,
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// The first path (in sorted order) sharing this inode, for hard links.
    pub same_inode_as: Option<String>,
}

pub struct SnapOpts {
    pub mtimes: bool,
    pub owners: bool,
    pub xattrs: bool,
}

pub const FULL: SnapOpts = SnapOpts {
    mtimes: true,
    owners: true,
    xattrs: true,
};

/// A comparable description of the tree under `root` (root excluded).
pub fn snapshot(root: &Path, opts: &SnapOpts) -> BTreeMap<String, FileFacts> {
    let mut out = BTreeMap::new();
    let mut paths = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p.clone());
            }
            paths.push(p);
        }
    }
    paths.sort();
    let mut inodes: HashMap<(u64, u64), String> = HashMap::new();
    for p in paths {
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let m = fs::symlink_metadata(&p).unwrap();
        let ft = m.file_type();
        use std::os::unix::fs::FileTypeExt;
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_file() {
            "file"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_fifo() {
            "fifo"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else {
            "socket"
        };
        let same_inode_as = if ft.is_file() && m.nlink() > 1 {
            let key = (m.dev(), m.ino());
            match inodes.get(&key) {
                Some(first) => Some(first.clone()),
                None => {
                    inodes.insert(key, rel.clone());
                    None
                }
            }
        } else {
            None
        };
        let xattrs = if opts.xattrs {
            list_xattrs(&p)
                .into_iter()
                .filter(|(k, _)| !k.starts_with("security.selinux"))
                .collect()
        } else {
            Vec::new()
        };
        out.insert(
            rel,
            FileFacts {
                kind,
                mode: m.mode() & 0o7777,
                uid: if opts.owners { m.uid() } else { 0 },
                gid: if opts.owners { m.gid() } else { 0 },
                mtime: if opts.mtimes && !ft.is_symlink() {
                    m.mtime()
                } else {
                    0
                },
                content: ft.is_file().then(|| fs::read(&p).unwrap()),
                link: ft
                    .is_symlink()
                    .then(|| fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec()),
                rdev: if ft.is_char_device() || ft.is_block_device() {
                    m.rdev()
                } else {
                    0
                },
                xattrs,
                same_inode_as,
            },
        );
    }
    out
}

pub fn list_xattrs(p: &Path) -> Vec<(String, Vec<u8>)> {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut buf = vec![0u8; 65536];
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for name in buf[..n as usize]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
    {
        let cn = CString::new(name).unwrap();
        let mut v = vec![0u8; 65536];
        let k = unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        if k >= 0 {
            v.truncate(k as usize);
            out.push((String::from_utf8_lossy(name).into_owned(), v));
        }
    }
    out.sort();
    out
}

/// Assert two snapshots are equal, printing the first differences.
pub fn assert_same_tree(a: &BTreeMap<String, FileFacts>, b: &BTreeMap<String, FileFacts>) {
    let mut diffs = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => diffs.push(format!("only in left: {k}")),
            Some(w) if w != v => diffs.push(format!("{k}:\n  left  {v:?}\n  right {w:?}")),
            _ => {}
        }
    }
    for k in b.keys() {
        if !a.contains_key(k) {
            diffs.push(format!("only in right: {k}"));
        }
    }
    assert!(diffs.is_empty(), "trees differ:\n{}", diffs.join("\n"));
}

/// A layer entry as read back by the tar crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry {
    pub path: String,
    pub kind: char,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub size: u64,
    pub link: Option<String>,
}

/// Decompress (by magic) and list a layer blob's entries in stream order.
pub fn list_entries(blob: &[u8]) -> Vec<TarEntry> {
    let mut raw = Vec::new();
    if blob.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        zstd::stream::read::Decoder::new(blob)
            .unwrap()
            .read_to_end(&mut raw)
            .unwrap();
    } else if blob.starts_with(&[0x1f, 0x8b]) {
        flate2::read::MultiGzDecoder::new(blob)
            .read_to_end(&mut raw)
            .unwrap();
    } else {
        raw = blob.to_vec();
    }
    let mut ar = tar::Archive::new(&raw[..]);
    ar.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            TarEntry {
                path: String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                kind: h.entry_type().as_byte() as char,
                mode: h.mode().unwrap(),
                uid: h.uid().unwrap(),
                gid: h.gid().unwrap(),
                mtime: h.mtime().unwrap(),
                size: e.size(),
                link: e
                    .link_name_bytes()
                    .map(|l| String::from_utf8_lossy(&l).into_owned()),
            }
        })
        .collect()
}

pub fn paths(entries: &[TarEntry]) -> Vec<String> {
    entries.iter().map(|e| e.path.clone()).collect()
}

/// Writes tar streams byte by byte, including names no well-behaved writer
/// would produce (`..`, absolute, NUL), for the hostile corpus.
#[derive(Default)]
pub struct RawTar {
    pub out: Vec<u8>,
}

impl RawTar {
    fn header(
        &mut self,
        name: &[u8],
        kind: tar::EntryType,
        size: u64,
        link: &[u8],
        mode: u32,
    ) -> tar::Header {
        let mut pax: Vec<(&str, Vec<u8>)> = Vec::new();
        if name.len() > 100 {
            pax.push(("path", name.to_vec()));
        }
        if link.len() > 100 {
            pax.push(("linkpath", link.to_vec()));
        }
        if !pax.is_empty() {
            self.pax(
                &pax.iter()
                    .map(|(k, v)| (*k, v.as_slice()))
                    .collect::<Vec<_>>(),
            );
        }
        let mut h = tar::Header::new_ustar();
        let n = &name[..name.len().min(100)];
        h.as_old_mut().name[..n.len()].copy_from_slice(n);
        let l = &link[..link.len().min(100)];
        h.as_old_mut().linkname[..l.len()].copy_from_slice(l);
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(1_600_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        h
    }

    fn push(&mut self, h: &tar::Header, data: &[u8]) {
        self.out.extend_from_slice(h.as_bytes());
        self.out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.out.extend(std::iter::repeat_n(0u8, pad));
    }

    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut body = Vec::new();
        for (k, v) in records {
            let rest = k.len() + v.len() + 3; // ' ' '=' '\n'
            let mut len = rest + 1;
            while len.to_string().len() + rest != len {
                len += 1;
            }
            body.extend_from_slice(format!("{len} {k}=").as_bytes());
            body.extend_from_slice(v);
            body.push(b'\n');
        }
        let mut h = tar::Header::new_ustar();
        h.as_old_mut().name[..11].copy_from_slice(b"PaxHeader/x");
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        self.push(&h, &body);
        self
    }

    pub fn file(&mut self, name: &[u8], data: &[u8]) -> &mut Self {
        self.file_mode(name, data, 0o644)
    }

    pub fn file_mode(&mut self, name: &[u8], data: &[u8], mode: u32) -> &mut Self {
        let h = self.header(name, tar::EntryType::Regular, data.len() as u64, b"", mode);
        self.push(&h, data);
        self
    }

    pub fn dir(&mut self, name: &[u8]) -> &mut Self {
        let h = self.header(name, tar::EntryType::Directory, 0, b"", 0o755);
        self.push(&h, b"");
        self
    }

    pub fn symlink(&mut self, name: &[u8], target: &[u8]) -> &mut Self {
        self.symlink_mode(name, target, 0o777)
    }

    pub fn symlink_mode(&mut self, name: &[u8], target: &[u8], mode: u32) -> &mut Self {
        let h = self.header(name, tar::EntryType::Symlink, 0, target, mode);
        self.push(&h, b"");
        self
    }

    pub fn hardlink(&mut self, name: &[u8], target: &[u8]) -> &mut Self {
        let h = self.header(name, tar::EntryType::Link, 0, target, 0o644);
        self.push(&h, b"");
        self
    }

    pub fn device(
        &mut self,
        name: &[u8],
        kind: tar::EntryType,
        major: u32,
        minor: u32,
    ) -> &mut Self {
        let mut h = self.header(name, kind, 0, b"", 0o666);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        h.set_cksum();
        self.push(&h, b"");
        self
    }

    /// A header declaring `size` bytes, followed by only `actual` of them.
    pub fn truncated_file(&mut self, name: &[u8], size: u64, actual: usize) -> &mut Self {
        let h = self.header(name, tar::EntryType::Regular, size, b"", 0o644);
        self.out.extend_from_slice(h.as_bytes());
        self.out.extend(std::iter::repeat_n(b'z', actual));
        self
    }

    /// A GNU sparse entry (`S`) of `real_size` bytes that are all hole: the
    /// map says "nothing stored, the file ends at real_size". One header
    /// block, however large the file claims to be.
    pub fn sparse_hole(&mut self, name: &[u8], real_size: u64) -> &mut Self {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_entry_type(tar::EntryType::GNUSparse);
        h.set_size(0);
        h.set_mode(0o644);
        h.set_mtime(1_600_000_000);
        h.set_uid(0);
        h.set_gid(0);
        // Base-256 (GNU's form for values past 11 octal digits).
        let octal = |field: &mut [u8; 12], v: u64| {
            *field = [0; 12];
            field[0] = 0x80;
            field[4..].copy_from_slice(&v.to_be_bytes());
        };
        let gnu = h.as_gnu_mut().expect("a GNU header");
        octal(&mut gnu.sparse[0].offset, real_size);
        octal(&mut gnu.sparse[0].numbytes, 0);
        octal(&mut gnu.realsize, real_size);
        h.set_cksum();
        self.push(&h, b"");
        self
    }

    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.out);
        out.extend(std::iter::repeat_n(0u8, 1024));
        out
    }
}

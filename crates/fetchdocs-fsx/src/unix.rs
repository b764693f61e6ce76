//! The unix side: every call through rustix, on the descriptor of the directory held open.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
#[cfg(target_os = "linux")]
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use crate::{Dir, Entry, WriteMode};

/// The descriptor of a [`Dir`], and what its file system was found to refuse.
#[derive(Debug)]
pub(crate) struct DirSys {
    /// `O_RDONLY|O_DIRECTORY|O_CLOEXEC`: names are looked up from it, and it can be synced.
    fd: OwnedFd,
    /// Files with no name may still be tried here (see [`Dir::create_unnamed`]).
    #[cfg(target_os = "linux")]
    pub(crate) unnamed: AtomicBool,
    /// `linkat(AT_EMPTY_PATH)` was refused: link through `/proc/self/fd` straight away.
    #[cfg(target_os = "linux")]
    pub(crate) link_by_proc: AtomicBool,
}

impl AsFd for DirSys {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

pub(crate) fn open_dir(path: &Path) -> io::Result<DirSys> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    Ok(DirSys {
        fd: rustix::fs::openat(CWD, path, flags, Mode::empty())?,
        #[cfg(target_os = "linux")]
        unnamed: AtomicBool::new(true),
        #[cfg(target_os = "linux")]
        link_by_proc: AtomicBool::new(false),
    })
}

/// Read and write for all, less the umask, as `File::create` makes files.
fn mode_rw() -> Mode {
    Mode::RUSR | Mode::WUSR | Mode::RGRP | Mode::WGRP | Mode::ROTH | Mode::WOTH
}

/// `name` in `dir`, opened with `flags` (plus `O_NOFOLLOW|O_CLOEXEC`).
fn open_at(dir: &Dir, name: &OsStr, flags: OFlags) -> io::Result<File> {
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(rustix::fs::openat(&dir.sys.fd, name, flags, mode_rw())?.into())
}

pub(crate) fn sync(dir: &Dir) -> io::Result<()> {
    // As std's `sync_all` on Apple systems: the data to the disk itself, not only to its
    // cache. A file system that cannot (some shares) gets a plain fsync.
    #[cfg(target_vendor = "apple")]
    if rustix::fs::fcntl_fullfsync(&dir.sys.fd).is_ok() {
        return Ok(());
    }
    Ok(rustix::fs::fsync(&dir.sys.fd)?)
}

pub(crate) fn in_memory(dir: &Dir) -> bool {
    #[cfg(target_os = "linux")]
    {
        // statfs(2)'s f_type of tmpfs and ramfs.
        const TMPFS_MAGIC: u64 = 0x0102_1994;
        const RAMFS_MAGIC: u64 = 0x8584_58f6;
        rustix::fs::fstatfs(&dir.sys.fd).is_ok_and(|s| {
            let kind = s.f_type as u64;
            kind == TMPFS_MAGIC || kind == RAMFS_MAGIC
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        false
    }
}

pub(crate) fn sync_filesystem(dir: &Dir) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        Ok(rustix::fs::syncfs(&dir.sys.fd)?)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "no syncfs on this system: sync each file",
        ))
    }
}

pub(crate) fn same_filesystem(a: &Dir, b: &Dir) -> bool {
    match (rustix::fs::fstat(&a.sys.fd), rustix::fs::fstat(&b.sys.fd)) {
        (Ok(a), Ok(b)) => a.st_dev == b.st_dev,
        _ => false,
    }
}

pub(crate) fn create_new(dir: &Dir, name: &OsStr) -> io::Result<File> {
    open_at(dir, name, OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL)
}

pub(crate) fn open_write(dir: &Dir, name: &OsStr, mode: WriteMode) -> io::Result<File> {
    let how = match mode {
        WriteMode::Append => OFlags::APPEND,
        WriteMode::Truncate => OFlags::TRUNC,
    };
    open_at(dir, name, OFlags::WRONLY | OFlags::CREATE | how)
}

pub(crate) fn open_read(dir: &Dir, name: &OsStr) -> io::Result<File> {
    regular_at(&dir.sys.fd, name)
}

pub(crate) fn open_regular(path: &Path) -> io::Result<File> {
    regular_at(CWD, path)
}

/// `path` (relative to `at`) opened for reading only if it is a regular file. Looked at first,
/// so that nothing but a regular file is ever opened (opening a device can do something by
/// itself); then opened without following a link or waiting on a FIFO (`O_NONBLOCK`), and
/// checked again on the handle, in case the name changed in between.
fn regular_at<Fd: AsFd, P: rustix::path::Arg + Copy>(at: Fd, path: P) -> io::Result<File> {
    let kind = |st: &Stat| FileType::from_raw_mode(st.st_mode);
    let st = rustix::fs::statat(&at, path, AtFlags::SYMLINK_NOFOLLOW)?;
    if kind(&st) != FileType::RegularFile {
        return Err(crate::not_regular(describe(kind(&st))));
    }
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY;
    let fd = match rustix::fs::openat(&at, path, flags | OFlags::CLOEXEC, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::LOOP | Errno::MLINK) => return Err(crate::not_regular("a symbolic link")),
        Err(e) => return Err(e.into()),
    };
    let st = rustix::fs::fstat(&fd)?;
    if kind(&st) != FileType::RegularFile {
        return Err(crate::not_regular(describe(kind(&st))));
    }
    Ok(fd.into())
}

/// A file type in words.
fn describe(kind: FileType) -> &'static str {
    match kind {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symbolic link",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        _ => "of an unknown type",
    }
}

pub(crate) fn entry_in(dir: &Dir, name: &OsStr) -> io::Result<Entry> {
    classify(rustix::fs::statat(
        &dir.sys.fd,
        name,
        AtFlags::SYMLINK_NOFOLLOW,
    ))
}

pub(crate) fn entry(path: &Path) -> io::Result<Entry> {
    classify(rustix::fs::statat(CWD, path, AtFlags::SYMLINK_NOFOLLOW))
}

/// What `lstat` found, as an [`Entry`].
fn classify(stat: Result<Stat, Errno>) -> io::Result<Entry> {
    let st = match stat {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(Entry::Missing),
        Err(e) => return Err(e.into()),
    };
    if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile && nlink(&st) <= 1 {
        Ok(Entry::Plain {
            len: u64::try_from(st.st_size).unwrap_or(0),
        })
    } else {
        Ok(Entry::Other)
    }
}

/// `st_nlink`, whose type differs by system and architecture (u16 to u64).
#[allow(clippy::useless_conversion)]
fn nlink(st: &Stat) -> u64 {
    u64::from(st.st_nlink)
}

pub(crate) fn link_count(file: &File) -> io::Result<u64> {
    Ok(nlink(&rustix::fs::fstat(file)?))
}

pub(crate) fn names(dir: &Dir, name: &OsStr, file: &File) -> io::Result<bool> {
    let held = rustix::fs::fstat(file)?;
    match rustix::fs::statat(&dir.sys.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(st.st_dev == held.st_dev && st.st_ino == held.st_ino),
        Err(Errno::NOENT) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn process_exists(pid: u32) -> Option<bool> {
    let pid = rustix::process::Pid::from_raw(i32::try_from(pid).ok()?)?;
    match rustix::process::test_kill_process(pid) {
        Ok(()) | Err(Errno::PERM) => Some(true),
        Err(Errno::SRCH) => Some(false),
        Err(_) => None,
    }
}

pub(crate) fn own_options() -> OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = OpenOptions::new();
    o.write(true).create(true);
    // The flag's bits, as the C int `open` takes them.
    o.custom_flags(OFlags::NOFOLLOW.bits().cast_signed());
    o
}

pub(crate) fn remove_file(dir: &Dir, name: &OsStr) -> io::Result<()> {
    Ok(rustix::fs::unlinkat(&dir.sys.fd, name, AtFlags::empty())?)
}

/// Remove the name at `path` (a link itself, never what it points to).
pub(crate) fn remove_name(path: &Path) -> io::Result<()> {
    std::fs::remove_file(path)
}

pub(crate) fn rename_no_replace(
    from_dir: &Dir,
    from: &OsStr,
    to_dir: &Dir,
    to: &OsStr,
) -> io::Result<()> {
    // renameat2(RENAME_NOREPLACE) on Linux, renameatx_np(RENAME_EXCL) on Apple systems.
    #[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
    {
        use rustix::fs::RenameFlags;
        let (a, b) = (&from_dir.sys.fd, &to_dir.sys.fd);
        match rustix::fs::renameat_with(a, from, b, to, RenameFlags::NOREPLACE) {
            Ok(()) => return Ok(()),
            // This file system (or kernel, or macOS before 10.12) has no such rename: a link.
            Err(e) if no_such_flag(e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    rename_by_link(from_dir, from, to_dir, to)
}

/// Whether a rename with a flag was refused for the flag, not for the names.
#[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
fn no_such_flag(e: Errno) -> bool {
    // On Linux ENOTSUP and EOPNOTSUPP are one number; on Apple systems two.
    e == Errno::INVAL || e == Errno::NOSYS || e == Errno::NOTSUP || e == Errno::OPNOTSUPP
}

/// [`rename_no_replace`] where the flag is refused: a hard link, which fails if `to` exists,
/// then `from` goes. Where there are no hard links either: look, then rename.
pub(crate) fn rename_by_link(
    from_dir: &Dir,
    from: &OsStr,
    to_dir: &Dir,
    to: &OsStr,
) -> io::Result<()> {
    let (a, b) = (&from_dir.sys.fd, &to_dir.sys.fd);
    match rustix::fs::linkat(a, from, b, to, AtFlags::empty()) {
        Ok(()) => Ok(rustix::fs::unlinkat(a, from, AtFlags::empty())?),
        Err(Errno::EXIST) => Err(Errno::EXIST.into()),
        // No hard links here (FAT says EPERM, some shares ENOTSUP): look, then rename. Another
        // process could take `to` between the two; on such a file system nothing closes that.
        Err(_) => rename_after_look(from_dir, from, to_dir, to),
    }
}

/// The last resort of [`rename_by_link`]: `AlreadyExists` if anything is at `to`, else a
/// plain rename.
pub(crate) fn rename_after_look(
    from_dir: &Dir,
    from: &OsStr,
    to_dir: &Dir,
    to: &OsStr,
) -> io::Result<()> {
    let (a, b) = (&from_dir.sys.fd, &to_dir.sys.fd);
    match rustix::fs::statat(b, to, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(_) => Err(Errno::EXIST.into()),
        Err(Errno::NOENT) => Ok(rustix::fs::renameat(a, from, b, to)?),
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn rename_replace(
    from_dir: &Dir,
    from: &OsStr,
    to_dir: &Dir,
    to: &OsStr,
) -> io::Result<()> {
    Ok(rustix::fs::renameat(
        &from_dir.sys.fd,
        from,
        &to_dir.sys.fd,
        to,
    )?)
}

#[cfg(target_os = "linux")]
pub(crate) fn create_unnamed(dir: &Dir) -> io::Result<Option<File>> {
    if !dir.sys.unnamed.load(Ordering::Relaxed) {
        return Ok(None);
    }
    let flags = OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC;
    match rustix::fs::openat(&dir.sys.fd, c".", flags, mode_rw()) {
        Ok(fd) => Ok(Some(fd.into())),
        // Not on this file system (network, FAT), or a kernel before 3.11 (EISDIR): named
        // files from now on. Anything else (a full disk) the caller meets and says.
        Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL | Errno::NOSYS) => {
            no_unnamed(dir);
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(target_os = "linux")]
pub(crate) fn link_unnamed(dir: &Dir, file: &File, name: &OsStr) -> io::Result<()> {
    if !dir.sys.link_by_proc.load(Ordering::Relaxed) {
        // AT_EMPTY_PATH: the empty path names the descriptor itself.
        match rustix::fs::linkat(file, c"", &dir.sys.fd, name, AtFlags::EMPTY_PATH) {
            // Before Linux 6.10, AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH (ENOENT without).
            Err(Errno::NOENT) => dir.sys.link_by_proc.store(true, Ordering::Relaxed),
            done => return Ok(done?),
        }
    }
    link_by_proc(dir, file, name)
}

/// Link `file` as `name` in `dir` through its entry under `/proc/self/fd`, which any process
/// may (where `linkat(AT_EMPTY_PATH)` needed a capability before Linux 6.10).
#[cfg(target_os = "linux")]
pub(crate) fn link_by_proc(dir: &Dir, file: &File, name: &OsStr) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let proc = format!("/proc/self/fd/{}", file.as_raw_fd());
    Ok(rustix::fs::linkat(
        CWD,
        proc.as_str(),
        &dir.sys.fd,
        name,
        AtFlags::SYMLINK_FOLLOW,
    )?)
}

#[cfg(target_os = "linux")]
pub(crate) fn no_unnamed(dir: &Dir) {
    dir.sys.unnamed.store(false, Ordering::Relaxed);
}

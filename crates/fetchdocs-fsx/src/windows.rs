//! The Windows side: names joined to the directory's path, std where it does what is needed,
//! and two calls it lacks (`MoveFileExW` without replacing, `GetFileInformationByHandle`).

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::windows::ffi::OsStrExt;
use std::os::windows::fs::{FileTypeExt, OpenOptionsExt};
use std::os::windows::io::AsRawHandle;
use std::path::Path;

use windows_sys::Win32::Foundation::{ERROR_ALREADY_EXISTS, ERROR_FILE_EXISTS};
use windows_sys::Win32::Storage::FileSystem::{
    BY_HANDLE_FILE_INFORMATION, FILE_FLAG_BACKUP_SEMANTICS, FILE_FLAG_OPEN_REPARSE_POINT,
    GetFileInformationByHandle, MoveFileExW,
};

use crate::{Dir, Entry, WriteMode};

/// A [`Dir`] here holds its path alone (each operation joins the name to it): this checks
/// that the directory is there.
pub(crate) fn open_dir(path: &Path) -> io::Result<()> {
    if fs::metadata(path)?.is_dir() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("{} is not a directory", path.display()),
        ))
    }
}

pub(crate) fn sync(dir: &Dir) -> io::Result<()> {
    // Windows has no call that makes a directory's entries durable: nothing to do.
    let _ = dir;
    Ok(())
}

pub(crate) fn in_memory(dir: &Dir) -> bool {
    let _ = dir;
    false
}

pub(crate) fn sync_filesystem(dir: &Dir) -> io::Result<()> {
    let _ = dir;
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "no syncfs on Windows: sync each file",
    ))
}

pub(crate) fn same_filesystem(a: &Dir, b: &Dir) -> bool {
    // The directories themselves (followed, as `Dir::open` follows), for their volumes.
    let volume = |d: &Dir| {
        let handle = OpenOptions::new()
            .access_mode(0)
            .custom_flags(FILE_FLAG_BACKUP_SEMANTICS)
            .open(&d.path)?;
        file_information(&handle).map(|i| i.dwVolumeSerialNumber)
    };
    match (volume(a), volume(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

pub(crate) fn create_new(dir: &Dir, name: &OsStr) -> io::Result<File> {
    own_options().create_new(true).open(dir.join(name))
}

pub(crate) fn open_write(dir: &Dir, name: &OsStr, mode: WriteMode) -> io::Result<File> {
    let mut o = own_options();
    match mode {
        WriteMode::Append => o.append(true),
        WriteMode::Truncate => o.truncate(true),
    };
    o.open(dir.join(name))
}

pub(crate) fn open_read(dir: &Dir, name: &OsStr) -> io::Result<File> {
    let path = dir.join(name);
    let meta = fs::symlink_metadata(&path)?;
    if !meta.is_file() {
        return Err(crate::not_regular(what(&meta)));
    }
    regular(open_no_follow(&path)?)
}

/// `path` opened for reading, the link itself if it is one.
fn open_no_follow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(FILE_FLAG_OPEN_REPARSE_POINT)
        .open(path)
}

/// `file`, if its handle is a regular file (a link opened as itself is not).
fn regular(file: File) -> io::Result<File> {
    let meta = file.metadata()?;
    if meta.is_file() {
        Ok(file)
    } else {
        Err(crate::not_regular(what(&meta)))
    }
}

/// What stands somewhere that is not a regular file, in words.
fn what(m: &fs::Metadata) -> &'static str {
    if m.is_symlink() {
        "a symbolic link or junction"
    } else if m.is_dir() {
        "a directory"
    } else {
        "not a plain file"
    }
}

pub(crate) fn entry_in(dir: &Dir, name: &OsStr) -> io::Result<Entry> {
    entry(&dir.join(name))
}

pub(crate) fn entry(path: &Path) -> io::Result<Entry> {
    // Opened for its attributes only, the link itself if it is one (as std's
    // `symlink_metadata` does), then asked how many names it has: one open, no race between
    // the look and the count.
    let file = match OpenOptions::new()
        .access_mode(0)
        .custom_flags(FILE_FLAG_BACKUP_SEMANTICS | FILE_FLAG_OPEN_REPARSE_POINT)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Entry::Missing),
        Err(e) => return Err(e),
    };
    let m = file.metadata()?;
    if m.is_file() && link_count(&file)? <= 1 {
        Ok(Entry::Plain { len: m.len() })
    } else {
        Ok(Entry::Other)
    }
}

pub(crate) fn link_count(file: &File) -> io::Result<u64> {
    Ok(u64::from(file_information(file)?.nNumberOfLinks))
}

/// `GetFileInformationByHandle`: the volume, the number of names, which std's metadata keeps
/// to itself.
#[allow(unsafe_code)]
fn file_information(file: &File) -> io::Result<BY_HANDLE_FILE_INFORMATION> {
    let mut info = BY_HANDLE_FILE_INFORMATION::default();
    // SAFETY: the handle stays open while `file` is borrowed, and `info` is a writable
    // BY_HANDLE_FILE_INFORMATION that the call fills and keeps no pointer to.
    let ok = unsafe { GetFileInformationByHandle(file.as_raw_handle(), &mut info) };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info)
}

pub(crate) fn names(dir: &Dir, name: &OsStr, file: &File) -> io::Result<bool> {
    let there = match open_no_follow(&dir.join(name)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let (a, b) = (file_information(file)?, file_information(&there)?);
    Ok(a.dwVolumeSerialNumber == b.dwVolumeSerialNumber
        && a.nFileIndexHigh == b.nFileIndexHigh
        && a.nFileIndexLow == b.nFileIndexLow)
}

pub(crate) fn process_exists(_pid: u32) -> Option<bool> {
    None
}

pub(crate) fn own_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.write(true)
        .create(true)
        .custom_flags(FILE_FLAG_OPEN_REPARSE_POINT);
    o
}

pub(crate) fn remove_file(dir: &Dir, name: &OsStr) -> io::Result<()> {
    remove_name(&dir.join(name))
}

/// Remove the name at `path`: a link to a directory (or a junction) is removed as a directory
/// is, the link itself and never what it points to.
pub(crate) fn remove_name(path: &Path) -> io::Result<()> {
    if fs::symlink_metadata(path)?.file_type().is_symlink_dir() {
        fs::remove_dir(path)
    } else {
        fs::remove_file(path)
    }
}

pub(crate) fn rename_no_replace(
    from_dir: &Dir,
    from: &OsStr,
    to_dir: &Dir,
    to: &OsStr,
) -> io::Result<()> {
    move_no_replace(&from_dir.join(from), &to_dir.join(to))
}

/// `MoveFileExW` without `MOVEFILE_REPLACE_EXISTING`: the move fails if `to` exists, on every
/// file system, so no fallback is needed here.
#[allow(unsafe_code)]
fn move_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    let (from, to) = (wide(from)?, wide(to)?);
    // SAFETY: both are NUL-terminated UTF-16 strings that live until the call returns, which
    // only reads them. Flags 0: no MOVEFILE_REPLACE_EXISTING.
    let ok = unsafe { MoveFileExW(from.as_ptr(), to.as_ptr(), 0) };
    if ok != 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    // std reads both codes as AlreadyExists today; said here so the promise rests on this
    // crate only.
    let taken = [ERROR_ALREADY_EXISTS, ERROR_FILE_EXISTS]
        .iter()
        .any(|&c| e.raw_os_error() == i32::try_from(c).ok());
    if taken && e.kind() != io::ErrorKind::AlreadyExists {
        return Err(io::Error::new(io::ErrorKind::AlreadyExists, e));
    }
    Err(e)
}

/// `path` as the wide, NUL-terminated string a `W` call takes; past `MAX_PATH`, its verbatim
/// (`\\?\`) form, as std makes it, which such calls need for long paths.
fn wide(path: &Path) -> io::Result<Vec<u16>> {
    let mut w: Vec<u16> = path.as_os_str().encode_wide().collect();
    if w.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has a NUL in it", path.display()),
        ));
    }
    if w.len() >= 248 {
        w = verbatim(&std::path::absolute(path)?);
    }
    w.push(0);
    Ok(w)
}

/// An absolute path (normalised by `std::path::absolute`) in its verbatim form.
fn verbatim(abs: &Path) -> Vec<u16> {
    let u = |s: &str| s.encode_utf16().collect::<Vec<u16>>();
    let w: Vec<u16> = abs.as_os_str().encode_wide().collect();
    if w.starts_with(&u(r"\\?\")) || w.starts_with(&u(r"\\.\")) {
        w
    } else if let Some(share) = w.strip_prefix(&u(r"\\")[..]) {
        [u(r"\\?\UNC\"), share.to_vec()].concat()
    } else {
        [u(r"\\?\"), w].concat()
    }
}

pub(crate) fn rename_replace(
    from_dir: &Dir,
    from: &OsStr,
    to_dir: &Dir,
    to: &OsStr,
) -> io::Result<()> {
    fs::rename(from_dir.join(from), to_dir.join(to))
}

pub(crate) fn open_regular(path: &Path) -> io::Result<File> {
    let meta = fs::symlink_metadata(path)?;
    if !meta.is_file() {
        return Err(crate::not_regular(what(&meta)));
    }
    regular(File::open(path)?)
}

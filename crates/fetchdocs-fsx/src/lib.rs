//! Every file-system operation of fetchdocs that differs by platform, in one place.
//!
//! fetchdocs writes only inside the output directory, never through a link planted there, and
//! never moves a file over one that another run (a shard) put under the same name. Those
//! promises rest on calls std does not offer: opening a name relative to a directory held open
//! without following links (`openat`, `O_NOFOLLOW`), renaming without replacing (`renameat2`,
//! `renameatx_np`, `MoveFileExW`), files with no name yet (`O_TMPFILE`, then `linkat`), syncing
//! a directory or a whole file system, and the real number of names a file has.
//!
//! On unix every call goes through rustix, which wraps each one safely: this crate has no
//! `unsafe` there. On Windows two calls are made directly (`MoveFileExW` and
//! `GetFileInformationByHandle`), each in one small block in a function of its own.
//!
//! A name given to a [`Dir`] is one path component (no separator, not `.` or `..`): a name
//! that could walk into another directory is refused with `InvalidInput` rather than followed.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as sys;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as sys;

#[cfg(not(any(unix, windows)))]
compile_error!("fetchdocs-fsx knows the file-system calls of unix and Windows only");

#[cfg(test)]
mod tests;

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::path::{Component, Path, PathBuf};

/// A directory held open, to work on the names in it without a walk down the whole path each
/// time, without following a link planted on the way, and to sync it once renames are made.
///
/// On unix it is a descriptor opened with `O_DIRECTORY` (not `O_PATH`: a directory opened that
/// way cannot be synced). On Windows it is the path alone, and each operation joins the name
/// to it; directories there are not synced.
#[derive(Debug)]
pub struct Dir {
    /// Where it is, for messages and for Windows, where names are joined to it.
    path: PathBuf,
    /// The descriptor, and what was learnt of this directory's file system on the way.
    #[cfg(unix)]
    sys: sys::DirSys,
}

/// How [`Dir::open_write`] treats what is in a file already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Write after what is there.
    Append,
    /// Start from an empty file.
    Truncate,
}

/// What stands at a name, as fetchdocs decides whether it may write there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// Nothing.
    Missing,
    /// A regular file with exactly one name: not a link, not hard-linked elsewhere (or a file
    /// system that does not count names and says 0). Writing to it touches nothing else.
    Plain {
        /// Its length in bytes.
        len: u64,
    },
    /// A symbolic link, a directory, a hard-linked file, anything else: writing there could
    /// change something outside, so it is not fetchdocs' own file.
    Other,
}

impl Dir {
    /// Open the directory at `path`, which must exist. A link at `path` itself is followed
    /// (the output directory may well be one); the names inside are then never followed.
    pub fn open(path: &Path) -> io::Result<Dir> {
        #[cfg(unix)]
        let sys = sys::open_dir(path)?;
        #[cfg(windows)]
        sys::open_dir(path)?;
        Ok(Dir {
            path: path.to_path_buf(),
            #[cfg(unix)]
            sys,
        })
    }

    /// The path it was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole path of `name` in this directory, for messages (and Windows).
    pub fn join(&self, name: &OsStr) -> PathBuf {
        self.path.join(name)
    }

    /// Make the renames, links and removals made in this directory so far durable (`fsync` of
    /// the directory; `F_FULLFSYNC` on macOS, as std's `sync_all` does). A few file systems
    /// cannot sync a directory and say so (`EINVAL`): whether that matters is the caller's
    /// call. On Windows, where directories are not synced, `Ok(())` at once.
    pub fn sync(&self) -> io::Result<()> {
        sys::sync(self)
    }

    /// Linux: `syncfs(2)`, everything written to this directory's file system made durable in
    /// one call, cheaper than a sync of each of many files. Elsewhere `Unsupported`: sync each
    /// file instead.
    pub fn sync_filesystem(&self) -> io::Result<()> {
        sys::sync_filesystem(self)
    }

    /// Whether this directory's file system lives in memory (Linux tmpfs or ramfs), where a
    /// sync has nothing to make durable and nothing survives a reboot anyway. `false` when
    /// that cannot be told, and on other systems.
    pub fn in_memory(&self) -> bool {
        sys::in_memory(self)
    }

    /// Whether the two directories are on one file system (the same `st_dev`; on Windows the
    /// same volume serial number), so that a rename from one to the other can work. `false`
    /// when that cannot be told.
    pub fn same_filesystem(&self, other: &Dir) -> bool {
        sys::same_filesystem(self, other)
    }

    /// Create `name` here, only if nothing is there (`AlreadyExists` if anything is: a file, a
    /// directory, a link, even one pointing nowhere, which is never followed). Unix:
    /// `O_WRONLY|O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC`, mode 0o666 less the umask; Windows: a
    /// new file, a reparse point opened as itself.
    pub fn create_new(&self, name: &OsStr) -> io::Result<File> {
        check_name(name)?;
        sys::create_new(self, name)
    }

    /// Open `name` here for writing, creating it if missing, never through a symbolic link
    /// (`O_NOFOLLOW`: a link there makes the open fail). A hard link is not refused by the
    /// open: see [`Dir::entry`] or [`own_file`] for that.
    pub fn open_write(&self, name: &OsStr, mode: WriteMode) -> io::Result<File> {
        check_name(name)?;
        sys::open_write(self, name, mode)
    }

    /// Open `name` here for reading, only if it is a regular file: as [`open_regular`], never
    /// through a symbolic link, never blocking on a FIFO, and checked on the open handle; what
    /// else stands there is an [`io::ErrorKind::InvalidInput`] error that says what it is.
    pub fn open_read(&self, name: &OsStr) -> io::Result<File> {
        check_name(name)?;
        sys::open_read(self, name)
    }

    /// What stands at `name` here, not following a link.
    pub fn entry(&self, name: &OsStr) -> io::Result<Entry> {
        check_name(name)?;
        sys::entry_in(self, name)
    }

    /// Remove the name `name` here (a link goes, not what it points to).
    pub fn remove_file(&self, name: &OsStr) -> io::Result<()> {
        check_name(name)?;
        sys::remove_file(self, name)
    }

    /// Rename `from` (here) to `to` in `to_dir`, never replacing: `AlreadyExists` if `to`
    /// exists, and then both files are as they were. Shards share an output directory, and a
    /// name another shard took must keep that shard's file.
    ///
    /// Linux: `renameat2(RENAME_NOREPLACE)`; macOS: `renameatx_np(RENAME_EXCL)`; Windows:
    /// `MoveFileExW` without `MOVEFILE_REPLACE_EXISTING`. Where the file system refuses the
    /// no-replace flag (`EINVAL`, `ENOSYS`, `ENOTSUP`; older kernels, some network file
    /// systems), a hard link to `to`, which fails if the name is taken, then removal of
    /// `from`. Where hard links are refused too (FAT, some shares), a look at `to`, then a
    /// plain rename: between the two, another process could put a file at `to` and lose it,
    /// a window no call on such a file system closes.
    pub fn rename_no_replace(&self, from: &OsStr, to_dir: &Dir, to: &OsStr) -> io::Result<()> {
        check_name(from)?;
        check_name(to)?;
        sys::rename_no_replace(self, from, to_dir, to)
    }

    /// Rename `from` (here) to `to` in `to_dir`, replacing whatever file is at `to` (for this
    /// run's own file, which a newer copy replaces). `renameat`; `std::fs::rename` on Windows.
    pub fn rename_replace(&self, from: &OsStr, to_dir: &Dir, to: &OsStr) -> io::Result<()> {
        check_name(from)?;
        check_name(to)?;
        sys::rename_replace(self, from, to_dir, to)
    }

    /// Linux: a new file in this directory that has no name yet (`O_TMPFILE|O_WRONLY|
    /// O_CLOEXEC`). Should the run die before [`Dir::link_unnamed`], it vanishes with the
    /// process and leaves nothing to clean up.
    ///
    /// `Ok(None)` where this file system or kernel has no such files (`EOPNOTSUPP`, `EISDIR`
    /// from kernels before 3.11, `EINVAL`, `ENOSYS`), and from then on for this `Dir` without
    /// asking again; also after [`Dir::no_unnamed`]: use a named temporary file instead. Other
    /// errors (a full disk) are returned. Other systems: always `Ok(None)`.
    pub fn create_unnamed(&self) -> io::Result<Option<File>> {
        #[cfg(target_os = "linux")]
        {
            sys::create_unnamed(self)
        }
        #[cfg(not(target_os = "linux"))]
        {
            Ok(None)
        }
    }

    /// Give `file`, from [`Dir::create_unnamed`], the name `name` here. A link, so it never
    /// replaces: `AlreadyExists` if the name is taken, as a rename without replacing says it.
    ///
    /// `linkat(AT_EMPTY_PATH)` first. Before Linux 6.10 that needs `CAP_DAC_READ_SEARCH` and
    /// says `ENOENT` without it: then, and from then on for this `Dir`, the link is made
    /// through `/proc/self/fd/N` with `AT_SYMLINK_FOLLOW`, which any process may. Other
    /// systems: `Unsupported` (they never hand out such a file).
    pub fn link_unnamed(&self, file: &File, name: &OsStr) -> io::Result<()> {
        check_name(name)?;
        #[cfg(target_os = "linux")]
        {
            sys::link_unnamed(self, file, name)
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = file;
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "files with no name exist on Linux only",
            ))
        }
    }

    /// No more files with no name here: one could not be created or linked, and named
    /// temporary files are used from now on.
    pub fn no_unnamed(&self) {
        #[cfg(target_os = "linux")]
        sys::no_unnamed(self);
    }
}

#[cfg(unix)]
impl std::os::fd::AsFd for Dir {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.sys.as_fd()
    }
}

/// What stands at `path`, not following a link there: for fetchdocs' own files outside a
/// directory held open (the lock, the state files).
pub fn entry(path: &Path) -> io::Result<Entry> {
    sys::entry(path)
}

/// Open `path` for reading only if it is a regular file: a symbolic link there is not followed,
/// a FIFO, socket or device is never opened (so nothing blocks on a FIFO with no writer, nor
/// reads without end from `/dev/zero`), and the type is checked again on the open handle. What
/// else stands there is an [`io::ErrorKind::InvalidInput`] error that says what it is.
pub fn open_regular(path: &Path) -> io::Result<File> {
    sys::open_regular(path)
}

/// The error for a name that is not a regular file.
pub(crate) fn not_regular(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("not a regular file ({what})"),
    )
}

/// How many names the open file has: `st_nlink` on unix, `nNumberOfLinks` from
/// `GetFileInformationByHandle` on Windows (where std's metadata does not tell it).
pub fn link_count(file: &File) -> io::Result<u64> {
    sys::link_count(file)
}

/// Whether `name` in `dir` names the open `file` itself now (a link there is not followed; a
/// missing name is `false`): the check after locking a file whose holder removes its name on
/// release, and before a file held open is moved by its name.
pub fn names(dir: &Dir, name: &OsStr, file: &File) -> io::Result<bool> {
    sys::names(dir, name, file)
}

/// Whether a process with this ID exists now (`None`: cannot tell here, as on Windows).
pub fn process_exists(pid: u32) -> Option<bool> {
    sys::process_exists(pid)
}

/// Options to write one of fetchdocs' own files: write, create if missing, and never through a
/// link: `O_NOFOLLOW` on unix (a link planted after [`own_file`] looked makes the open fail),
/// `FILE_FLAG_OPEN_REPARSE_POINT` on Windows (a symbolic link or junction is opened itself,
/// not followed).
pub fn own_options() -> OpenOptions {
    sys::own_options()
}

/// Make sure `path`, one of fetchdocs' own directories inside the output directory, is a real
/// directory (created if missing): a link planted there would send writes elsewhere.
///
/// Two runs that share the output directory (shards) may both find it missing: the one that
/// loses the race to create it checks what the other made instead of failing.
pub fn own_dir(path: &Path) -> io::Result<()> {
    own_dir_made_by(path, |d| fs::create_dir(d))
}

/// [`own_dir`], creating with `create` (the tests race it).
fn own_dir_made_by(dir: &Path, create: impl Fn(&Path) -> io::Result<()>) -> io::Result<()> {
    // `symlink_metadata` does not follow: a link is not a directory here (nor, on Windows, a
    // junction).
    let check = |m: fs::Metadata| {
        if m.is_dir() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "{} is a link or a file, not fetchdocs' own directory; remove it and run again \
                 (fetchdocs writes nothing outside the output directory)",
                dir.display()
            )))
        }
    };
    match fs::symlink_metadata(dir) {
        Ok(m) => check(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => match create(dir) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => check(fs::symlink_metadata(dir)?),
            made => made,
        },
        Err(e) => Err(e),
    }
}

/// Make `path`, one of fetchdocs' own files, safe to open for writing: a symbolic link or a
/// hard-linked file standing there is removed (only that name goes; whatever it pointed at, or
/// the file's other names, are untouched), so the next open creates a file of our own. The
/// link count is the real one on Windows too. A directory there is an error.
pub fn own_file(path: &Path) -> io::Result<()> {
    match entry(path)? {
        Entry::Missing | Entry::Plain { .. } => Ok(()),
        Entry::Other => sys::remove_name(path),
    }
}

/// Write every byte of `chunks`, in order, in as few `writev` calls as the system allows (a
/// downloaded body arrives as many small buffers; one call for all of them, not one each).
pub fn write_all_vectored<W: Write + ?Sized>(
    f: &mut W,
    chunks: &[impl AsRef<[u8]>],
) -> io::Result<()> {
    // Most systems take at most 1,024 slices a call (IOV_MAX); a buffer holds far fewer.
    for group in chunks.chunks(512) {
        // An empty slice left alone would make a call write 0 bytes, read as WriteZero.
        let mut slices: Vec<IoSlice> = group
            .iter()
            .map(AsRef::as_ref)
            .filter(|c| !c.is_empty())
            .map(IoSlice::new)
            .collect();
        let mut slices = &mut slices[..];
        while !slices.is_empty() {
            match f.write_vectored(slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut slices, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// `name` must be one plain path component: a separator, `.` or `..` (or, on Windows, a drive
/// or stream `:`) would reach outside the directory held open.
fn check_name(name: &OsStr) -> io::Result<()> {
    let mut parts = Path::new(name).components();
    let one = matches!(
        (parts.next(), parts.next()),
        (Some(Component::Normal(n)), None) if n == name
    );
    #[cfg(windows)]
    let one = one && {
        use std::os::windows::ffi::OsStrExt;
        !name.encode_wide().any(|c| c == u16::from(b':'))
    };
    if one {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a single file name"),
        ))
    }
}

use super::*;

use std::io::Read;

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) {
    std::os::unix::fs::symlink(target, link).unwrap();
}

#[test]
fn create_new_makes_a_file_and_refuses_a_planted_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = Dir::open(tmp.path()).unwrap();
    fs::write(tmp.path().join("planted"), b"keep").unwrap();
    let e = dir.create_new(os("planted")).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
    assert_eq!(fs::read(tmp.path().join("planted")).unwrap(), b"keep");

    let mut f = dir.create_new(os("new")).unwrap();
    f.write_all(b"data").unwrap();
    assert_eq!(fs::read(dir.join(os("new"))).unwrap(), b"data");
}

#[cfg(unix)]
#[test]
fn create_new_refuses_a_planted_symlink_even_one_to_nothing() {
    let (tmp, outside) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let dir = Dir::open(tmp.path()).unwrap();
    // Followed, a link to nothing would create its target outside.
    let nothing = outside.path().join("nothing");
    symlink(&nothing, &tmp.path().join("dangling"));
    let e = dir.create_new(os("dangling")).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
    assert!(fs::symlink_metadata(&nothing).is_err());

    let kept = outside.path().join("kept");
    fs::write(&kept, b"keep").unwrap();
    symlink(&kept, &tmp.path().join("link"));
    let e = dir.create_new(os("link")).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
    assert_eq!(fs::read(&kept).unwrap(), b"keep");
}

#[cfg(unix)]
#[test]
fn no_open_follows_a_symlink() {
    let (tmp, outside) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let dir = Dir::open(tmp.path()).unwrap();
    let kept = outside.path().join("kept");
    fs::write(&kept, b"keep").unwrap();
    let link = tmp.path().join("link");
    symlink(&kept, &link);
    assert!(dir.open_write(os("link"), WriteMode::Append).is_err());
    assert!(dir.open_write(os("link"), WriteMode::Truncate).is_err());
    assert!(dir.open_read(os("link")).is_err());
    assert!(own_options().open(&link).is_err());
    assert_eq!(fs::read(&kept).unwrap(), b"keep");
}

#[test]
fn open_write_creates_then_appends_or_truncates() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = Dir::open(tmp.path()).unwrap();
    let name = os("log");
    dir.open_write(name, WriteMode::Append)
        .unwrap()
        .write_all(b"one ")
        .unwrap();
    dir.open_write(name, WriteMode::Append)
        .unwrap()
        .write_all(b"two")
        .unwrap();
    let mut text = String::new();
    dir.open_read(name)
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, "one two");
    dir.open_write(name, WriteMode::Truncate)
        .unwrap()
        .write_all(b"new")
        .unwrap();
    assert_eq!(fs::read(dir.join(name)).unwrap(), b"new");
    // own_options writes from the start and keeps what is beyond, as std's write+create.
    own_options()
        .open(dir.join(name))
        .unwrap()
        .write_all(b"N")
        .unwrap();
    assert_eq!(fs::read(dir.join(name)).unwrap(), b"New");
}

#[test]
fn names_that_would_leave_the_directory_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = Dir::open(tmp.path()).unwrap();
    fs::create_dir(tmp.path().join("sub")).unwrap();
    let mut bad = vec!["", ".", "..", "sub/x", "../x", "sub/", "/x"];
    if cfg!(windows) {
        bad.extend(["sub\\x", "C:x", "x:stream"]);
    }
    for name in bad {
        let e = dir.create_new(os(name)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{name:?}");
        let e = dir.entry(os(name)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{name:?}");
    }
    assert!(
        fs::read_dir(tmp.path().join("sub"))
            .unwrap()
            .next()
            .is_none()
    );
}

#[test]
fn rename_no_replace_refuses_a_taken_name_and_leaves_both_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = Dir::open(tmp.path()).unwrap();
    fs::write(dir.join(os("part")), b"new").unwrap();
    fs::write(dir.join(os("taken")), b"theirs").unwrap();
    let e = dir
        .rename_no_replace(os("part"), &dir, os("taken"))
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
    assert_eq!(fs::read(dir.join(os("part"))).unwrap(), b"new");
    assert_eq!(fs::read(dir.join(os("taken"))).unwrap(), b"theirs");
    dir.sync().unwrap();
}

#[test]
fn rename_no_replace_moves_between_two_dirs() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    fs::create_dir(&a).unwrap();
    fs::create_dir(&b).unwrap();
    let (a, b) = (Dir::open(&a).unwrap(), Dir::open(&b).unwrap());
    fs::write(a.join(os("part")), b"data").unwrap();
    a.rename_no_replace(os("part"), &b, os("final")).unwrap();
    assert_eq!(a.entry(os("part")).unwrap(), Entry::Missing);
    assert_eq!(fs::read(b.join(os("final"))).unwrap(), b"data");
    assert_eq!(b.entry(os("final")).unwrap(), Entry::Plain { len: 4 });
    a.sync().unwrap();
    b.sync().unwrap();
}

/// The ways a file system without the no-replace flag is served, forced here: each moves the
/// file to a free name and refuses a taken one, leaving both files.
#[cfg(unix)]
#[test]
fn the_fallbacks_of_rename_no_replace_never_replace_either() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = Dir::open(tmp.path()).unwrap();
    fs::write(dir.join(os("taken")), b"theirs").unwrap();
    type Rename = fn(&Dir, &OsStr, &Dir, &OsStr) -> io::Result<()>;
    let fallbacks: [Rename; 2] = [unix::rename_by_link, unix::rename_after_look];
    for (i, fallback) in fallbacks.into_iter().enumerate() {
        let (part, free) = (format!("part-{i}"), format!("free-{i}"));
        fs::write(dir.join(os(&part)), b"new").unwrap();
        let e = fallback(&dir, os(&part), &dir, os("taken")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{i}");
        assert_eq!(fs::read(dir.join(os(&part))).unwrap(), b"new");
        assert_eq!(fs::read(dir.join(os("taken"))).unwrap(), b"theirs");

        fallback(&dir, os(&part), &dir, os(&free)).unwrap();
        assert_eq!(dir.entry(os(&part)).unwrap(), Entry::Missing, "{i}");
        // One name only: the link's first name is gone.
        assert_eq!(
            dir.entry(os(&free)).unwrap(),
            Entry::Plain { len: 3 },
            "{i}"
        );
    }
}

#[test]
fn rename_replace_replaces() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = Dir::open(tmp.path()).unwrap();
    fs::write(dir.join(os("part")), b"newer").unwrap();
    fs::write(dir.join(os("final")), b"old").unwrap();
    dir.rename_replace(os("part"), &dir, os("final")).unwrap();
    assert_eq!(dir.entry(os("part")).unwrap(), Entry::Missing);
    assert_eq!(fs::read(dir.join(os("final"))).unwrap(), b"newer");
}

#[cfg(target_os = "linux")]
#[test]
fn a_file_with_no_name_is_linked_either_way_and_never_over_a_name() {
    use std::sync::atomic::Ordering;
    let tmp = tempfile::tempdir().unwrap();
    let dir = Dir::open(tmp.path()).unwrap();
    fs::write(dir.join(os("taken")), b"keep").unwrap();
    for by_proc in [false, true] {
        // Where linkat(AT_EMPTY_PATH) was refused (no capability, before Linux 6.10).
        dir.sys.link_by_proc.store(by_proc, Ordering::Relaxed);
        let mut f = dir.create_unnamed().unwrap().expect(
            "no O_TMPFILE in the test's temporary directory: set TMPDIR to a local file system",
        );
        f.write_all(b"data").unwrap();
        f.sync_all().unwrap();
        let e = dir.link_unnamed(&f, os("taken")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{by_proc}");
        let name = format!("new-{by_proc}");
        dir.link_unnamed(&f, os(&name)).unwrap();
        assert_eq!(fs::read(dir.join(os(&name))).unwrap(), b"data");
        assert_eq!(link_count(&f).unwrap(), 1);
    }
    assert_eq!(fs::read(dir.join(os("taken"))).unwrap(), b"keep");
    dir.sync().unwrap();
    // Refused once, it is not asked for again.
    dir.no_unnamed();
    assert!(dir.create_unnamed().unwrap().is_none());
}

#[cfg(not(target_os = "linux"))]
#[test]
fn there_are_no_files_with_no_name_elsewhere() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = Dir::open(tmp.path()).unwrap();
    assert!(dir.create_unnamed().unwrap().is_none());
    let f = dir.create_new(os("named")).unwrap();
    let e = dir.link_unnamed(&f, os("other")).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::Unsupported);
}

#[test]
fn entry_tells_missing_plain_and_other_and_counts_links() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = Dir::open(tmp.path()).unwrap();
    let both = |name: &str| {
        let (held, whole) = (
            dir.entry(os(name)).unwrap(),
            entry(&dir.join(os(name))).unwrap(),
        );
        assert_eq!(held, whole, "{name}");
        held
    };
    assert_eq!(both("missing"), Entry::Missing);
    fs::write(dir.join(os("plain")), b"12345").unwrap();
    assert_eq!(both("plain"), Entry::Plain { len: 5 });
    fs::create_dir(dir.join(os("subdir"))).unwrap();
    assert_eq!(both("subdir"), Entry::Other);

    // A hard link: neither name is fetchdocs' own to write to any more.
    fs::hard_link(dir.join(os("plain")), dir.join(os("second"))).unwrap();
    assert_eq!(both("plain"), Entry::Other);
    assert_eq!(both("second"), Entry::Other);
    let f = dir.open_read(os("plain")).unwrap();
    assert_eq!(link_count(&f).unwrap(), 2);
    dir.remove_file(os("second")).unwrap();
    assert_eq!(link_count(&f).unwrap(), 1);
    assert_eq!(both("plain"), Entry::Plain { len: 5 });

    #[cfg(unix)]
    {
        symlink(&dir.join(os("plain")), &dir.join(os("link")));
        assert_eq!(both("link"), Entry::Other);
        symlink(&dir.join(os("subdir")), &dir.join(os("dirlink")));
        assert_eq!(both("dirlink"), Entry::Other);
    }
}

#[test]
fn own_dir_creates_a_missing_directory_and_takes_an_existing_one() {
    let tmp = tempfile::tempdir().unwrap();
    let own = tmp.path().join(".fetchdocs");
    own_dir(&own).unwrap();
    assert!(own.is_dir());
    own_dir(&own).unwrap();
    let file = tmp.path().join("file");
    fs::write(&file, b"x").unwrap();
    let e = own_dir(&file).unwrap_err();
    assert!(
        e.to_string().contains("not fetchdocs' own directory"),
        "{e}"
    );
}

#[cfg(unix)]
#[test]
fn own_dir_refuses_a_symlink_to_a_directory() {
    let (tmp, outside) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let own = tmp.path().join(".fetchdocs");
    symlink(outside.path(), &own);
    let e = own_dir(&own).unwrap_err();
    assert!(
        e.to_string().contains("not fetchdocs' own directory"),
        "{e}"
    );
    assert!(fs::symlink_metadata(&own).unwrap().file_type().is_symlink());
}

#[test]
fn a_directory_another_run_made_first_is_taken_if_it_is_one() {
    let tmp = tempfile::tempdir().unwrap();
    let own = tmp.path().join(".fetchdocs");
    // The other run creates it between our look and our create.
    let race = |d: &Path| {
        fs::create_dir(d)?;
        fs::create_dir(d)
    };
    own_dir_made_by(&own, race).unwrap();
    assert!(own.is_dir());
    // What the other side made is still checked: a file there is refused.
    let file = tmp.path().join("partial");
    let plant = |d: &Path| {
        fs::write(d, b"x")?;
        fs::create_dir(d)
    };
    let err = own_dir_made_by(&file, plant).unwrap_err();
    assert!(
        err.to_string().contains("not fetchdocs' own directory"),
        "{err}"
    );
}

#[test]
fn own_file_removes_a_hard_link_but_not_the_other_name_nor_a_plain_file() {
    let (tmp, outside) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let kept = outside.path().join("kept");
    fs::write(&kept, b"keep").unwrap();
    let own = tmp.path().join("lock");
    fs::hard_link(&kept, &own).unwrap();
    own_file(&own).unwrap();
    assert!(fs::symlink_metadata(&own).is_err());
    assert_eq!(fs::read(&kept).unwrap(), b"keep");

    fs::write(&own, b"ours").unwrap();
    own_file(&own).unwrap();
    assert_eq!(fs::read(&own).unwrap(), b"ours");
    own_file(&tmp.path().join("missing")).unwrap();
}

#[cfg(unix)]
#[test]
fn own_file_removes_a_planted_symlink_without_touching_its_target() {
    let (tmp, outside) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let kept = outside.path().join("kept");
    fs::write(&kept, b"keep").unwrap();
    let own = tmp.path().join("lock");
    symlink(&kept, &own);
    own_file(&own).unwrap();
    assert!(fs::symlink_metadata(&own).is_err());
    assert_eq!(fs::read(&kept).unwrap(), b"keep");
    // A link to a directory goes the same way; the directory stays, with what is in it.
    symlink(outside.path(), &own);
    own_file(&own).unwrap();
    assert!(fs::symlink_metadata(&own).is_err());
    assert_eq!(fs::read(&kept).unwrap(), b"keep");
}

#[cfg(target_os = "linux")]
#[test]
fn sync_filesystem_works_on_linux() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = Dir::open(tmp.path()).unwrap();
    dir.create_new(os("file"))
        .unwrap()
        .write_all(b"data")
        .unwrap();
    dir.sync_filesystem().unwrap();
    dir.sync().unwrap();
}

#[cfg(not(target_os = "linux"))]
#[test]
fn sync_filesystem_is_unsupported_elsewhere() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = Dir::open(tmp.path()).unwrap();
    let e = dir.sync_filesystem().unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::Unsupported);
    dir.sync().unwrap();
}

#[test]
fn same_filesystem_for_two_directories_in_one_place() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("a")).unwrap();
    let (top, a) = (
        Dir::open(tmp.path()).unwrap(),
        Dir::open(&tmp.path().join("a")).unwrap(),
    );
    assert!(top.same_filesystem(&a));
    assert!(a.same_filesystem(&a));
    // /proc is a file system of its own wherever it is mounted.
    #[cfg(target_os = "linux")]
    if let Ok(proc) = Dir::open(Path::new("/proc")) {
        assert!(!top.same_filesystem(&proc));
    }
}

#[test]
fn a_directory_must_exist_and_be_one() {
    let tmp = tempfile::tempdir().unwrap();
    let e = Dir::open(&tmp.path().join("missing")).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
    fs::write(tmp.path().join("file"), b"x").unwrap();
    let e = Dir::open(&tmp.path().join("file")).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotADirectory);
}

/// A writer that takes at most 7 bytes a call and remembers how many slices each call got.
#[derive(Default)]
struct Trickle {
    out: Vec<u8>,
    slices_per_call: Vec<usize>,
}

impl Write for Trickle {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.slices_per_call.push(bufs.len());
        let mut room = 7;
        for b in bufs {
            let n = b.len().min(room);
            self.out.extend_from_slice(&b[..n]);
            room -= n;
            if room == 0 {
                break;
            }
        }
        Ok(7 - room)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn write_all_vectored_writes_every_byte_in_order_through_short_writes() {
    // More chunks than one call takes, of uneven lengths, some empty.
    let chunks: Vec<Vec<u8>> = (0..1300u32)
        .map(|i| (0..i % 5).map(|j| (i + j) as u8).collect())
        .collect();
    let mut w = Trickle::default();
    write_all_vectored(&mut w, &chunks).unwrap();
    assert_eq!(w.out, chunks.concat());
    assert!(w.slices_per_call.iter().all(|&n| (1..=512).contains(&n)));

    // To a file, in one call where the system takes it.
    let tmp = tempfile::tempdir().unwrap();
    let dir = Dir::open(tmp.path()).unwrap();
    let mut f = dir.create_new(os("body")).unwrap();
    write_all_vectored(&mut f, &chunks).unwrap();
    write_all_vectored(&mut f, &[b""; 3]).unwrap();
    assert_eq!(fs::read(dir.join(os("body"))).unwrap(), chunks.concat());
}

// The download lanes share one `Dir` (in an `Arc`) between threads.
const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<Dir>();
};

#[cfg(target_os = "linux")]
#[test]
fn tmpfs_is_told_apart_from_a_disk() {
    // /dev/shm is tmpfs on Linux; /proc is neither tmpfs nor ramfs.
    if let Ok(shm) = Dir::open(Path::new("/dev/shm")) {
        assert!(shm.in_memory());
    }
    assert!(!Dir::open(Path::new("/proc")).unwrap().in_memory());
}

#[cfg(unix)]
#[test]
fn open_regular_opens_nothing_but_a_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    fs::write(&file, b"abc").unwrap();
    let mut text = String::new();
    open_regular(&file)
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, "abc");
    let link = dir.path().join("zero");
    symlink(Path::new("/dev/zero"), &link);
    let fifo = dir.path().join("fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    for (path, what) in [
        (&link, "a symbolic link"),
        (&fifo, "a FIFO"),
        (&dir.path().to_path_buf(), "a directory"),
    ] {
        let e = open_regular(path).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains(what), "{e}");
    }
    assert_eq!(
        open_regular(&dir.path().join("none")).unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
}

#[test]
fn names_tells_whether_a_name_still_stands_for_an_open_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = Dir::open(tmp.path()).unwrap();
    let file = dir.create_new(os("a")).unwrap();
    assert!(names(&dir, os("a"), &file).unwrap());
    // Moved away: the name is gone.
    std::fs::rename(tmp.path().join("a"), tmp.path().join("b")).unwrap();
    assert!(!names(&dir, os("a"), &file).unwrap());
    assert!(names(&dir, os("b"), &file).unwrap());
    // Another file at the name is not this one.
    std::fs::write(tmp.path().join("a"), b"other").unwrap();
    assert!(!names(&dir, os("a"), &file).unwrap());
    // Nor is a link to it.
    #[cfg(unix)]
    {
        std::fs::remove_file(tmp.path().join("a")).unwrap();
        symlink(&tmp.path().join("b"), &tmp.path().join("a"));
        assert!(!names(&dir, os("a"), &file).unwrap());
    }
}

#[cfg(unix)]
#[test]
fn this_process_exists_and_one_long_gone_does_not() {
    assert_eq!(process_exists(std::process::id()), Some(true));
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    assert_eq!(process_exists(pid), Some(false));
}

#[cfg(unix)]
#[test]
fn open_read_opens_nothing_but_a_regular_file_and_never_waits_on_a_fifo() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = Dir::open(tmp.path()).unwrap();
    fs::write(tmp.path().join("f"), b"abc").unwrap();
    let mut text = String::new();
    dir.open_read(os("f"))
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, "abc");
    symlink(Path::new("/dev/zero"), &tmp.path().join("zero"));
    // A FIFO with no writer: an open without O_NONBLOCK would wait for one for ever.
    assert!(
        std::process::Command::new("mkfifo")
            .arg(tmp.path().join("fifo"))
            .status()
            .unwrap()
            .success()
    );
    fs::create_dir(tmp.path().join("sub")).unwrap();
    for (name, what) in [
        ("zero", "a symbolic link"),
        ("fifo", "a FIFO"),
        ("sub", "a directory"),
    ] {
        let e = dir.open_read(os(name)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{name}");
        assert!(e.to_string().contains(what), "{name}: {e}");
    }
    assert_eq!(
        dir.open_read(os("none")).unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
}

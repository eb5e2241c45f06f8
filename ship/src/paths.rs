//! Workspace path resolution (§4.2): `.`/`..` and symbolic links are resolved component by
//! component (a missing tail is allowed) and the result must lie within the workspace; a path
//! needing more than [`MAX_LINKS`] links is refused, never half-resolved.
//! Callers run this with the session user's file-system credentials.
//!
//! The check is repeated by the kernel at the moment of use: files are opened relative to a
//! descriptor of the workspace with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`, or,
//! on kernels without `openat2`, one component at a time with `O_NOFOLLOW` (the resolved path
//! has no links left, so a link found there was planted since and is refused). Only regular
//! files are opened for reading and writing: the open is non-blocking (a FIFO cannot hang the
//! agent) and the type is checked on the descriptor.

use std::collections::VecDeque;
use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::sys;

/// Why a path was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum PathError {
    /// The path contains a NUL character (400).
    Nul,
    /// The path leaves the workspace (403).
    Denied,
    /// Resolving the path needs more than [`MAX_LINKS`] symbolic links (400).
    Loop,
}

/// Most symbolic links followed while resolving one path (the kernel's limit).
pub const MAX_LINKS: usize = 40;

/// Resolves `input` against the workspace `w`. With `follow_last == false` a final symbolic
/// link is not followed (the link itself is the target, as for deletion).
pub fn resolve(w: &Path, input: &str, follow_last: bool) -> Result<PathBuf, PathError> {
    if input.contains('\0') {
        return Err(PathError::Nul);
    }
    let input_path = Path::new(input);
    let mut resolved = PathBuf::from("/");
    let mut queue: VecDeque<OsString> = VecDeque::new();
    if input_path.is_absolute() {
        push_components(&mut queue, input_path, false);
    } else {
        resolved = w.to_path_buf();
        push_components(&mut queue, input_path, false);
    }
    let mut links = 0;
    while let Some(c) = queue.pop_front() {
        if c == "." || c.is_empty() {
            continue;
        }
        if c == ".." {
            resolved.pop();
            continue;
        }
        resolved.push(&c);
        if queue.is_empty() && !follow_last {
            break;
        }
        let is_link =
            std::fs::symlink_metadata(&resolved).is_ok_and(|m| m.file_type().is_symlink());
        if !is_link {
            continue;
        }
        if links >= MAX_LINKS {
            return Err(PathError::Loop);
        }
        links += 1;
        let Ok(target) = std::fs::read_link(&resolved) else {
            continue;
        };
        resolved.pop();
        if target.is_absolute() {
            resolved = PathBuf::from("/");
        }
        push_components(&mut queue, &target, true);
    }
    if resolved.starts_with(w) {
        Ok(resolved)
    } else {
        Err(PathError::Denied)
    }
}

/// Why a file could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// Nothing at the path.
    NotFound,
    /// Not a regular file (FIFO, socket, device, directory opened for reading).
    NotFile,
    /// The path left the workspace between resolution and use.
    Denied,
    /// Any other failure.
    Io(io::Error),
}

impl From<io::Error> for OpenError {
    fn from(e: io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::ENOENT) => Self::NotFound,
            Some(libc::ENXIO | libc::ENODEV) => Self::NotFile,
            Some(libc::EXDEV | libc::ELOOP) => Self::Denied,
            _ => Self::Io(e),
        }
    }
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// `p` (a result of [`resolve`]) relative to the workspace `w`; `.` for `w` itself.
fn relative(w: &Path, p: &Path) -> Result<PathBuf, OpenError> {
    let rel = p.strip_prefix(w).map_err(|_| OpenError::Denied)?;
    Ok(if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel.to_path_buf()
    })
}

/// The normal components of `rel`; `..` (never produced by [`resolve`]) is refused.
fn normal_components(rel: &Path) -> io::Result<Vec<CString>> {
    let mut out = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => out.push(cpath(Path::new(n))?),
            Component::CurDir => {}
            _ => return Err(io::Error::from_raw_os_error(libc::EXDEV)),
        }
    }
    Ok(out)
}

/// Opens `rel` beneath the directory `dir` without following any symbolic link, one component
/// at a time: the fallback of `openat2` for kernels older than 5.6.
pub fn open_walk(dir: &OwnedFd, rel: &Path, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let comps = normal_components(rel)?;
    let Some((last, parents)) = comps.split_last() else {
        return sys::openat_nofollow(dir.as_raw_fd(), c".", flags, mode);
    };
    let mut cur: Option<OwnedFd> = None;
    for c in parents {
        let at = cur.as_ref().unwrap_or(dir).as_raw_fd();
        cur = Some(sys::openat_nofollow(
            at,
            c,
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )?);
    }
    sys::openat_nofollow(cur.as_ref().unwrap_or(dir).as_raw_fd(), last, flags, mode)
}

/// Opens `rel` beneath `dir`: `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`, or
/// [`open_walk`] when the kernel has no `openat2`. The last component is never followed.
pub fn open_beneath(dir: &OwnedFd, rel: &Path, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let flags = flags | libc::O_NOFOLLOW;
    match sys::openat2_beneath(dir.as_raw_fd(), &cpath(rel)?, flags, mode) {
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => open_walk(dir, rel, flags, mode),
        r => r,
    }
}

/// Opens the resolved path `p` (below the workspace `w`) as a regular file with `flags`
/// (`O_RDONLY`, `O_WRONLY | O_TRUNC`, …). With `create_mode` a missing file is created
/// exclusively and given exactly that mode (whatever the umask). Anything but a regular file
/// is [`OpenError::NotFile`]; the open never blocks (FIFOs) and never follows a link.
pub fn open_file(
    w: &Path,
    p: &Path,
    flags: i32,
    create_mode: Option<u32>,
) -> Result<std::fs::File, OpenError> {
    let rel = relative(w, p)?;
    let dir = sys::open_dir_nofollow(w)?;
    let flags = flags | libc::O_NONBLOCK | libc::O_NOCTTY;
    let fd = match create_mode {
        Some(mode) => match open_beneath(&dir, &rel, flags | libc::O_CREAT | libc::O_EXCL, mode) {
            Ok(fd) => {
                sys::fchmod(fd.as_raw_fd(), mode)?;
                fd
            }
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => open_beneath(&dir, &rel, flags, 0)?,
            Err(e) => return Err(e.into()),
        },
        None => open_beneath(&dir, &rel, flags, 0)?,
    };
    let f = std::fs::File::from(fd);
    if !f.metadata()?.is_file() {
        return Err(OpenError::NotFile);
    }
    sys::set_blocking(f.as_raw_fd())?;
    Ok(f)
}

/// Creates the missing directories above the resolved path `p` (below `w`), each with mode
/// 0755 (§4.3), walking from a descriptor of `w` without following any link.
pub fn create_parents(w: &Path, p: &Path) -> Result<(), OpenError> {
    let rel = relative(w, p)?;
    let Some(parent) = rel.parent() else {
        return Ok(());
    };
    let mut cur = sys::open_dir_nofollow(w)?;
    for c in normal_components(parent)? {
        let dir = libc::O_PATH | libc::O_DIRECTORY;
        cur = match sys::openat_nofollow(cur.as_raw_fd(), &c, dir, 0) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                match sys::mkdirat(cur.as_raw_fd(), &c, 0o755) {
                    Ok(()) => {
                        let fd = sys::openat_nofollow(
                            cur.as_raw_fd(),
                            &c,
                            libc::O_RDONLY | libc::O_DIRECTORY,
                            0,
                        )?;
                        sys::fchmod(fd.as_raw_fd(), 0o755)?;
                        fd
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                        sys::openat_nofollow(cur.as_raw_fd(), &c, dir, 0)?
                    }
                    Err(e) => return Err(OpenError::Io(e)),
                }
            }
            Err(e) => return Err(e.into()),
        };
    }
    Ok(())
}

fn push_components(queue: &mut VecDeque<OsString>, path: &Path, front: bool) {
    let comps: Vec<OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            Component::ParentDir => Some("..".into()),
            Component::CurDir => Some(".".into()),
            Component::RootDir | Component::Prefix(_) => None,
        })
        .collect();
    if front {
        for c in comps.into_iter().rev() {
            queue.push_front(c);
        }
    } else {
        queue.extend(comps);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn setup() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let w = dir.path().join("home/u/workspace");
        std::fs::create_dir_all(w.join("sub")).unwrap();
        std::fs::write(w.join("sub/f.txt"), "x").unwrap();
        std::fs::create_dir_all(dir.path().join("home/other")).unwrap();
        (dir, w)
    }

    #[test]
    fn relative_and_dot_paths_stay_inside() {
        let (_d, w) = setup();
        assert_eq!(resolve(&w, "", true).unwrap(), w);
        assert_eq!(resolve(&w, ".", true).unwrap(), w);
        assert_eq!(
            resolve(&w, "sub/../sub/f.txt", true).unwrap(),
            w.join("sub/f.txt")
        );
        assert_eq!(
            resolve(&w, "new/dir/file", true).unwrap(),
            w.join("new/dir/file")
        );
        assert_eq!(resolve(&w, "missing/../a", true).unwrap(), w.join("a"));
        let abs = w.join("sub/f.txt");
        assert_eq!(resolve(&w, abs.to_str().unwrap(), true).unwrap(), abs);
    }

    #[test]
    fn escapes_are_denied() {
        let (_d, w) = setup();
        assert_eq!(resolve(&w, "..", true), Err(PathError::Denied));
        assert_eq!(resolve(&w, "../../other", true), Err(PathError::Denied));
        assert_eq!(resolve(&w, "/etc/passwd", true), Err(PathError::Denied));
        assert_eq!(resolve(&w, "sub/../../x", true), Err(PathError::Denied));
        assert_eq!(resolve(&w, "a\0b", true), Err(PathError::Nul));
        // A sibling whose name shares the prefix is outside.
        let sib = format!("{}2/x", w.display());
        assert_eq!(resolve(&w, &sib, true), Err(PathError::Denied));
    }

    #[test]
    fn symlinks_are_followed_and_checked() {
        let (_d, w) = setup();
        symlink("/etc", w.join("etc")).unwrap();
        symlink("sub", w.join("inner")).unwrap();
        symlink("../../other", w.join("up")).unwrap();
        symlink("/nonexistent/target", w.join("dangling")).unwrap();
        assert_eq!(resolve(&w, "etc/passwd", true), Err(PathError::Denied));
        assert_eq!(resolve(&w, "etc", true), Err(PathError::Denied));
        assert_eq!(resolve(&w, "up/x", true), Err(PathError::Denied));
        assert_eq!(resolve(&w, "dangling", true), Err(PathError::Denied));
        assert_eq!(
            resolve(&w, "inner/f.txt", true).unwrap(),
            w.join("sub/f.txt")
        );
        // Not following the last component: the link itself is the target.
        assert_eq!(resolve(&w, "etc", false).unwrap(), w.join("etc"));
        assert_eq!(resolve(&w, "dangling", false).unwrap(), w.join("dangling"));
        // A loop does not hang, and is refused.
        symlink("loop", w.join("loop")).unwrap();
        assert_eq!(resolve(&w, "loop/x", true), Err(PathError::Loop));
    }

    #[test]
    fn more_links_than_the_limit_are_refused_not_half_followed() {
        // Issue 9, attack 1: after 40 links the old resolver stopped following and accepted
        // the path, and the open then followed `e` to /etc.
        let (_d, w) = setup();
        symlink(".", w.join("d")).unwrap();
        symlink("/etc", w.join("e")).unwrap();
        let attack = format!("{}e/passwd", "d/".repeat(41));
        assert_eq!(resolve(&w, &attack, true), Err(PathError::Loop));
        let fine = format!("{}sub/f.txt", "d/".repeat(MAX_LINKS));
        assert_eq!(resolve(&w, &fine, true).unwrap(), w.join("sub/f.txt"));
    }

    #[test]
    fn opening_never_leaves_the_workspace() {
        let (_d, w) = setup();
        symlink("/etc", w.join("etc")).unwrap();
        symlink("/proc/self/fd", w.join("fds")).unwrap();
        let dir = sys::open_dir_nofollow(&w).unwrap();
        for rel in ["etc/passwd", "fds/0", "../other", "sub/../../other"] {
            for flags in [libc::O_RDONLY, libc::O_RDONLY | libc::O_NOFOLLOW] {
                assert!(
                    open_beneath(&dir, Path::new(rel), flags, 0).is_err(),
                    "openat2 {rel}"
                );
            }
            assert!(
                open_walk(&dir, Path::new(rel), libc::O_RDONLY, 0).is_err(),
                "walk {rel}"
            );
        }
        assert!(open_walk(&dir, Path::new("sub/f.txt"), libc::O_RDONLY, 0).is_ok());
        assert!(open_beneath(&dir, Path::new("sub/f.txt"), libc::O_RDONLY, 0).is_ok());
        assert!(matches!(
            open_file(&w, &w.join("etc/passwd"), libc::O_RDONLY, None),
            Err(OpenError::Denied)
        ));
    }

    #[test]
    fn only_regular_files_are_opened_and_fifos_do_not_block() {
        let (_d, w) = setup();
        let fifo = w.join("f");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        assert!(matches!(
            open_file(&w, &fifo, libc::O_RDONLY, None),
            Err(OpenError::NotFile)
        ));
        assert!(matches!(
            open_file(&w, &fifo, libc::O_WRONLY | libc::O_TRUNC, Some(0o644)),
            Err(OpenError::NotFile)
        ));
        assert!(matches!(
            open_file(&w, &w.join("sub"), libc::O_RDONLY, None),
            Err(OpenError::NotFile)
        ));
        assert!(matches!(
            open_file(&w, &w.join("nope"), libc::O_RDONLY, None),
            Err(OpenError::NotFound)
        ));
        let f = open_file(&w, &w.join("new.txt"), libc::O_WRONLY, Some(0o640)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(f.metadata().unwrap().permissions().mode() & 0o777, 0o640);
        create_parents(&w, &w.join("a/b/c.txt")).unwrap();
        assert!(w.join("a/b").is_dir());
        symlink("/etc", w.join("etc")).unwrap();
        assert!(create_parents(&w, &w.join("etc/x/y")).is_err());
        assert!(!Path::new("/etc/x").exists());
    }
}

//! Workspace path resolution (§4.2): `.`/`..` and symbolic links are resolved component by
//! component (a missing tail is allowed) and the result must lie within the workspace.
//! Callers run this with the session user's file-system credentials.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

/// Why a path was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum PathError {
    /// The path contains a NUL character (400).
    Nul,
    /// The path leaves the workspace (403).
    Denied,
}

const MAX_LINKS: usize = 40;

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
        if !is_link || links >= MAX_LINKS {
            continue;
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
        // A loop does not hang.
        symlink("loop", w.join("loop")).unwrap();
        assert!(resolve(&w, "loop/x", true).is_ok());
    }
}

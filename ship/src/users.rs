//! Session → OS user mapping (§9, §10): user names derived from SHA-256, uids allocated above
//! 10000, `/etc/passwd`, `/etc/group` and `/etc/shadow` edited directly (no NSS: the binary is
//! static) under the shadow-utils lock, metadata persisted atomically.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::sys::{self, Ident};

/// Group of every session user (reference).
pub const GROUP_NAME: &str = "shipyard_users";
pub const GROUP_ID: u32 = 9999;

/// A ready session user.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    pub workspace: PathBuf,
}

impl User {
    /// The user's private temporary directory (`TMPDIR`), 0700 in the home.
    pub fn tmp_dir(&self) -> PathBuf {
        self.home.join("tmp")
    }

    pub fn ident(&self) -> Ident {
        Ident {
            uid: self.uid,
            gid: self.gid,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct UserInfo {
    uid: u32,
    gid: u32,
    home_dir: String,
}

#[derive(Debug, Default)]
struct Inner {
    sessions: BTreeMap<String, String>,
    info: BTreeMap<String, UserInfo>,
}

/// The user registry.
#[derive(Debug)]
pub struct Users {
    cfg: std::sync::Arc<Config>,
    inner: Mutex<Inner>,
}

/// `ship_` + the first `digits` lowercase hex digits of SHA-256(session id).
pub fn derive_name(session_id: &str, digits: usize) -> String {
    let hash = Sha256::digest(session_id.as_bytes());
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("ship_{}", &hex[..digits])
}

impl Users {
    /// Loads the metadata and restores missing system users (§10). Never fails: problems with
    /// individual users or files are logged.
    pub fn load(cfg: std::sync::Arc<Config>) -> Self {
        let users = Self {
            cfg,
            inner: Mutex::new(Inner::default()),
        };
        if let Err(e) = users.restore() {
            tracing::error!(error = %e, "restoring session users failed");
        }
        users
    }

    fn restore(&self) -> anyhow::Result<()> {
        let dir = &self.cfg.metadata_dir;
        fs::create_dir_all(dir)?;
        // Root's, 0700 (§10), also when the volume arrives with other owners or modes.
        let _ = std::os::unix::fs::chown(dir, Some(0), Some(0));
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
        let sessions: BTreeMap<String, String> = read_json(&dir.join("session_users.json"));
        let info: BTreeMap<String, UserInfo> = read_json(&dir.join("users_info.json"));
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.sessions = sessions;
        inner.info = info;
        self.ensure_group()?;
        let names: Vec<String> = inner
            .info
            .keys()
            .cloned()
            .chain(inner.sessions.values().cloned())
            .collect();
        let mut changed = false;
        for name in names {
            if !inner.info.contains_key(&name) {
                let uid = self.home_uid_or_allocate(&inner, &name)?;
                inner.info.insert(name.clone(), self.info(&name, uid));
                changed = true;
            }
            let uid = inner.info[&name].uid;
            // Records from before per-user groups name the shared group.
            if inner.info[&name].gid != uid {
                inner.info.insert(name.clone(), self.info(&name, uid));
                changed = true;
            }
            if let Err(e) = self
                .ensure_system_user(&name, uid)
                .and_then(|()| self.setup_home(&name, uid))
            {
                tracing::error!(user = %name, error = %e, "restoring a session user failed");
            }
        }
        if changed {
            self.save(&inner)?;
        }
        Ok(())
    }

    /// The user of `session_id`, created on first use; home and workspace re-created if missing.
    /// Blocking; `Err` is the reason for `Failed to create user <user>: <reason>`.
    pub fn ensure(&self, session_id: &str) -> Result<User, (String, String)> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let name = match inner.sessions.get(session_id) {
            Some(n) => n.clone(),
            None => {
                let short = derive_name(session_id, 16);
                if inner.sessions.values().any(|v| *v == short) {
                    derive_name(session_id, 26)
                } else {
                    short
                }
            }
        };
        let fail = |e: anyhow::Error| (name.clone(), format!("{e:#}"));
        let known = inner.sessions.contains_key(session_id) && inner.info.contains_key(&name);
        if known {
            let uid = inner.info[&name].uid;
            let user = self.user(&name, uid);
            drop(inner);
            self.ensure_workspace(&user).map_err(fail)?;
            return Ok(user);
        }
        let uid = match inner.info.get(&name) {
            Some(i) => i.uid,
            None => self.home_uid_or_allocate(&inner, &name).map_err(fail)?,
        };
        self.ensure_group().map_err(fail)?;
        self.ensure_system_user(&name, uid).map_err(fail)?;
        self.setup_home(&name, uid).map_err(fail)?;
        inner.sessions.insert(session_id.to_owned(), name.clone());
        inner.info.insert(name.clone(), self.info(&name, uid));
        self.save(&inner).map_err(fail)?;
        Ok(self.user(&name, uid))
    }

    /// The uids of every known session user.
    pub fn uids(&self) -> Vec<u32> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.info.values().map(|i| i.uid).collect()
    }

    /// The user of an already mapped session, without creating anything.
    pub fn lookup(&self, session_id: &str) -> Option<User> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let name = inner.sessions.get(session_id)?;
        let uid = inner.info.get(name)?.uid;
        Some(self.user(name, uid))
    }

    /// The user of a session that is already set up and whose workspace is a real directory:
    /// the common case of [`Self::ensure`], which then has nothing to do. One `lstat`, cheap
    /// enough for an async worker; `None` means "call `ensure`".
    pub fn ready(&self, session_id: &str) -> Option<User> {
        let user = self.lookup(session_id)?;
        fs::symlink_metadata(&user.workspace)
            .ok()?
            .is_dir()
            .then_some(user)
    }

    /// Runs `f` once no user creation (and so no metadata write) is in progress, keeping
    /// further ones from starting meanwhile: the agent exits this way (§11.3).
    pub fn quiesced<T>(&self, f: impl FnOnce() -> T) -> T {
        let _inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f()
    }

    /// The workspace path a session has or would get.
    pub fn workspace_of(&self, session_id: &str) -> PathBuf {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let name = inner
            .sessions
            .get(session_id)
            .cloned()
            .unwrap_or_else(|| derive_name(session_id, 16));
        self.cfg.home_root.join(name).join("workspace")
    }

    fn user(&self, name: &str, uid: u32) -> User {
        let home = self.cfg.home_root.join(name);
        User {
            name: name.to_owned(),
            uid,
            gid: uid,
            workspace: home.join("workspace"),
            home,
        }
    }

    /// The registry record of user `name`.
    fn info(&self, name: &str, uid: u32) -> UserInfo {
        UserInfo {
            uid,
            gid: uid,
            home_dir: self.cfg.home_root.join(name).to_string_lossy().into_owned(),
        }
    }

    /// The owner of an existing home of `name` when it is a session uid (a home kept from
    /// before), else a newly allocated uid.
    fn home_uid_or_allocate(&self, inner: &Inner, name: &str) -> anyhow::Result<u32> {
        match fs::metadata(self.cfg.home_root.join(name)) {
            Ok(m) if m.uid() >= self.cfg.first_uid => Ok(m.uid()),
            _ => self.allocate_uid(inner),
        }
    }

    fn allocate_uid(&self, inner: &Inner) -> anyhow::Result<u32> {
        let passwd = fs::read_to_string(&self.cfg.passwd_file).unwrap_or_default();
        let mut used: std::collections::HashSet<u32> = passwd
            .lines()
            .filter_map(|l| l.split(':').nth(2)?.parse().ok())
            .collect();
        used.extend(inner.info.values().map(|i| i.uid));
        // The uid is also the user's own gid: skip gids other groups hold.
        let groups = fs::read_to_string(&self.cfg.group_file).unwrap_or_default();
        used.extend(
            groups
                .lines()
                .filter_map(|l| l.split(':').nth(2)?.parse::<u32>().ok()),
        );
        (self.cfg.first_uid..u32::MAX - 1)
            .find(|u| !used.contains(u))
            .ok_or_else(|| anyhow::anyhow!("no free uid"))
    }

    fn ensure_group(&self) -> anyhow::Result<()> {
        let _lock = self.db_lock()?;
        let text = fs::read_to_string(&self.cfg.group_file).unwrap_or_default();
        if text
            .lines()
            .any(|l| l.split(':').next() == Some(GROUP_NAME))
        {
            return Ok(());
        }
        let mut new = text;
        if !new.is_empty() && !new.ends_with('\n') {
            new.push('\n');
        }
        new.push_str(&format!("{GROUP_NAME}:x:{GROUP_ID}:\n"));
        replace_file(&self.cfg.group_file, new.as_bytes(), Perms::Keep(0o644))
    }

    /// Adds `name` to the passwd (and shadow) file if it is missing, with its own primary
    /// group `name` (gid = uid) in the group file.
    fn ensure_system_user(&self, name: &str, uid: u32) -> anyhow::Result<()> {
        let _lock = self.db_lock()?;
        let groups = fs::read_to_string(&self.cfg.group_file).unwrap_or_default();
        let gid_owner = groups.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[0].to_owned())
        });
        match gid_owner {
            Some(g) if g == name => {}
            Some(g) => anyhow::bail!("gid {uid} is already used by group {g}"),
            None => {
                let mut new = groups;
                if !new.is_empty() && !new.ends_with('\n') {
                    new.push('\n');
                }
                new.push_str(&format!("{name}:x:{uid}:\n"));
                replace_file(&self.cfg.group_file, new.as_bytes(), Perms::Keep(0o644))?;
            }
        }
        let text = fs::read_to_string(&self.cfg.passwd_file).unwrap_or_default();
        if !text.lines().any(|l| l.split(':').next() == Some(name)) {
            let home = self.cfg.home_root.join(name);
            let mut new = text;
            if !new.is_empty() && !new.ends_with('\n') {
                new.push('\n');
            }
            new.push_str(&format!(
                "{name}:x:{uid}:{uid}::{}:{}\n",
                home.display(),
                self.cfg.shell
            ));
            replace_file(&self.cfg.passwd_file, new.as_bytes(), Perms::Keep(0o644))?;
        }
        if let Ok(shadow) = fs::read_to_string(&self.cfg.shadow_file)
            && !shadow.lines().any(|l| l.split(':').next() == Some(name))
        {
            let days = chrono::Utc::now().timestamp() / 86400;
            let mut new = shadow;
            if !new.is_empty() && !new.ends_with('\n') {
                new.push('\n');
            }
            new.push_str(&format!("{name}:!:{days}:0:99999:7:::\n"));
            replace_file(&self.cfg.shadow_file, new.as_bytes(), Perms::Keep(0o640))?;
        }
        Ok(())
    }

    /// Creates the root of the homes when missing: 0755 (whatever the agent's umask), so
    /// that every user can reach its own home.
    fn ensure_home_root(&self) -> anyhow::Result<()> {
        let root = &self.cfg.home_root;
        if fs::symlink_metadata(root).is_err() {
            fs::create_dir_all(root)
                .and_then(|()| fs::set_permissions(root, fs::Permissions::from_mode(0o755)))
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", root.display()))?;
        }
        Ok(())
    }

    /// Creates or adopts the home (0700, owned by the user), the workspace and `~/.bashrc`.
    fn setup_home(&self, name: &str, uid: u32) -> anyhow::Result<()> {
        let home = self.cfg.home_root.join(name);
        self.ensure_home_root()?;
        if let Ok(m) = fs::symlink_metadata(&home)
            && !m.is_dir()
        {
            move_aside(&home, &m)?;
        }
        match fs::create_dir(&home) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => anyhow::bail!("cannot create home {}: {e}", home.display()),
        }
        adopt_dir(&home, uid)?;
        let user = self.user(name, uid);
        self.ensure_workspace(&user)?;
        adopt_dir(&user.workspace, uid)?;
        adopt_dir(&user.tmp_dir(), uid)?;
        // O_EXCL never follows a planted symlink; an existing file is left alone.
        if let Ok(mut f) = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(home.join(".bashrc"))
        {
            f.write_all(b"PS1='\\u@shipyard:\\w\\$ '\n")?;
            sys::fchown(f.as_raw_fd(), uid, uid)?;
        }
        Ok(())
    }

    /// §4.2 step 1: the workspace must be a real directory; a symlink is removed, anything
    /// else moved aside, then a fresh directory is created.
    /// The private `TMPDIR` (0700) is re-created the same way.
    pub fn ensure_workspace(&self, user: &User) -> anyhow::Result<()> {
        let w = &user.workspace;
        let tmp = user.tmp_dir();
        match fs::symlink_metadata(&tmp) {
            Ok(m) if m.is_dir() => {}
            Ok(m) => {
                move_aside(&tmp, &m)?;
                make_private_dir(&tmp, user.uid)?;
            }
            Err(_) if fs::symlink_metadata(&user.home).is_ok() => {
                make_private_dir(&tmp, user.uid)?;
            }
            Err(_) => {}
        }
        match fs::symlink_metadata(w) {
            Ok(m) if m.is_dir() => return Ok(()),
            Ok(m) => move_aside(w, &m)?,
            Err(_) => {}
        }
        if fs::symlink_metadata(&user.home).is_err() {
            let _ = self.ensure_home_root();
            fs::create_dir(&user.home)
                .map_err(|e| anyhow::anyhow!("cannot create home {}: {e}", user.home.display()))?;
            adopt_dir(&user.home, user.uid)?;
        }
        make_private_dir(&tmp, user.uid)?;
        make_private_dir(w, user.uid)
    }

    fn db_lock(&self) -> anyhow::Result<fs::File> {
        let dir = self.cfg.passwd_file.parent().unwrap_or(Path::new("/etc"));
        let f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(dir.join(".pwd.lock"))
            .map_err(|e| anyhow::anyhow!("cannot open the user database lock: {e}"))?;
        sys::lock_file(f.as_raw_fd())
            .map_err(|e| anyhow::anyhow!("cannot lock the user database: {e}"))?;
        Ok(f)
    }

    fn save(&self, inner: &Inner) -> anyhow::Result<()> {
        let dir = &self.cfg.metadata_dir;
        fs::create_dir_all(dir)?;
        replace_file(
            &dir.join("session_users.json"),
            &serde_json::to_vec_pretty(&inner.sessions)?,
            Perms::RootOnly,
        )?;
        replace_file(
            &dir.join("users_info.json"),
            &serde_json::to_vec_pretty(&inner.info)?,
            Perms::RootOnly,
        )
    }
}

/// Creates the directory `path` (an existing one is fine) and adopts it for `uid`.
fn make_private_dir(path: &Path, uid: u32) -> anyhow::Result<()> {
    if let Err(e) = fs::create_dir(path)
        && !fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
    {
        anyhow::bail!("cannot create {}: {e}", path.display());
    }
    adopt_dir(path, uid)
}

/// Re-owns a directory (not recursively) to `uid` and its own group (gid = uid) and sets
/// 0700, through a descriptor opened without following links.
fn adopt_dir(path: &Path, uid: u32) -> anyhow::Result<()> {
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    sys::fchown(f.as_raw_fd(), uid, uid)
        .map_err(|e| anyhow::anyhow!("cannot chown {}: {e}", path.display()))?;
    f.set_permissions(fs::Permissions::from_mode(0o700))
        .map_err(|e| anyhow::anyhow!("cannot chmod {}: {e}", path.display()))?;
    Ok(())
}

/// Removes a symlink, or renames anything else to `<name>.<unix time>.moved`.
fn move_aside(path: &Path, meta: &fs::Metadata) -> anyhow::Result<()> {
    if meta.file_type().is_symlink() {
        fs::remove_file(path).map_err(|e| anyhow::anyhow!("cannot remove {}: {e}", path.display()))
    } else {
        let mut target = path.as_os_str().to_owned();
        target.push(format!(".{}.moved", chrono::Utc::now().timestamp()));
        fs::rename(path, &target)
            .map_err(|e| anyhow::anyhow!("cannot move {} aside: {e}", path.display()))
    }
}

fn read_json<T: serde::de::DeserializeOwned + Default>(path: &Path) -> T {
    let Ok(bytes) = fs::read(path) else {
        return T::default();
    };
    match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            let mut aside = path.as_os_str().to_owned();
            aside.push(format!(".corrupt-{}", chrono::Utc::now().timestamp()));
            tracing::error!(file = %path.display(), error = %e, "unreadable metadata file set aside");
            let _ = fs::rename(path, &aside);
            T::default()
        }
    }
}

/// Owner and mode of a file written by [`replace_file`].
#[derive(Debug, Clone, Copy)]
pub enum Perms {
    /// Keep the owner, group and mode of an existing file; new files get this mode.
    Keep(u32),
    /// Owned by root, mode 0600, whatever the file had before (metadata, §10).
    RootOnly,
}

/// Atomically replaces `path`: temporary file in the same directory, fsync, rename. Falls back
/// to an in-place write when the file cannot be renamed over (a bind-mounted file).
pub fn replace_file(path: &Path, data: &[u8], perms: Perms) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", rand::random::<u32>()));
    let (mode, owner) = match perms {
        Perms::Keep(mode) => match fs::metadata(path) {
            Ok(m) => (m.mode() & 0o7777, Some((m.uid(), m.gid()))),
            Err(_) => (mode, None),
        },
        Perms::RootOnly => (0o600, Some((0, 0))),
    };
    let write = || -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        if let Some((uid, gid)) = owner {
            sys::fchown(f.as_raw_fd(), uid, gid)?;
        }
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        if e.raw_os_error() == Some(libc::EBUSY) {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(path)?;
            f.write_all(data)?;
            if let Perms::RootOnly = perms {
                sys::fchown(f.as_raw_fd(), 0, 0)?;
                f.set_permissions(fs::Permissions::from_mode(0o600))?;
            }
            f.sync_all()?;
            return Ok(());
        }
        anyhow::bail!("cannot write {}: {e}", path.display());
    }
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_derived_from_sha256() {
        // sha256("user-123") = 0e2fd3…
        let n = derive_name("user-123", 16);
        assert!(n.starts_with("ship_"));
        assert_eq!(n.len(), 5 + 16);
        assert!(
            n[5..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(derive_name("user-123", 26).len(), 31);
        assert!(derive_name("user-123", 26).starts_with(&n));
        assert_ne!(derive_name("user-1234", 16), n);
        assert_eq!(
            derive_name("abc", 16),
            "ship_ba7816bf8f01cfea",
            "sha256(abc) starts with ba7816bf8f01cfea"
        );
    }

    fn test_cfg(root: &Path) -> Config {
        let mut cfg = Config::from_env().unwrap();
        cfg.home_root = root.join("home");
        cfg.metadata_dir = root.join("meta");
        cfg.passwd_file = root.join("passwd");
        cfg.group_file = root.join("group");
        cfg.shadow_file = root.join("shadow");
        cfg
    }

    #[test]
    fn users_are_created_persisted_and_restored() {
        if !sys::is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("passwd"),
            "root:x:0:0::/root:/bin/sh\nold:x:10000:10000::/x:/bin/sh\n",
        )
        .unwrap();
        fs::write(dir.path().join("shadow"), "root:*:1::::::\n").unwrap();
        let cfg = std::sync::Arc::new(test_cfg(dir.path()));
        let users = Users::load(cfg.clone());
        let a = users.ensure("session-a").unwrap();
        let b = users.ensure("session-b").unwrap();
        assert_eq!(a.uid, 10001, "10000 is taken in passwd");
        assert_eq!(b.uid, 10002);
        assert_eq!(a.name, derive_name("session-a", 16));
        let m = fs::metadata(&a.home).unwrap();
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o777),
            (10001, 10001, 0o700),
            "owned by the user and its own group"
        );
        assert!(
            fs::read_to_string(dir.path().join("passwd"))
                .unwrap()
                .contains(&format!("{}:x:10001:10001:", a.name))
        );
        let group = fs::read_to_string(dir.path().join("group")).unwrap();
        assert!(group.contains("shipyard_users:x:9999:"));
        assert!(group.contains(&format!("{}:x:10001:\n", a.name)), "{group}");
        assert!(group.contains(&format!("{}:x:10002:\n", b.name)), "{group}");
        let tmp = fs::metadata(a.tmp_dir()).unwrap();
        assert_eq!((tmp.uid(), tmp.mode() & 0o777), (10001, 0o700));
        assert!(
            fs::read_to_string(dir.path().join("shadow"))
                .unwrap()
                .contains(&format!("{}:!:", a.name))
        );
        // A symlinked workspace is replaced, its target left alone.
        fs::remove_dir(&a.workspace).unwrap();
        std::os::unix::fs::symlink("/etc", &a.workspace).unwrap();
        let a2 = users.ensure("session-a").unwrap();
        assert!(fs::symlink_metadata(&a2.workspace).unwrap().is_dir());
        // Restore: passwd lost, metadata kept.
        fs::write(dir.path().join("passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        let users = Users::load(cfg);
        assert!(
            fs::read_to_string(dir.path().join("passwd"))
                .unwrap()
                .contains(&format!("{}:x:10002:", b.name))
        );
        assert_eq!(users.lookup("session-b").unwrap().uid, 10002);
        let c = users.ensure("session-c").unwrap();
        assert_eq!(c.uid, 10000, "lowest uid free in passwd and metadata");
    }

    #[test]
    fn metadata_files_are_root_only_whatever_they_were() {
        if !sys::is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let cfg = std::sync::Arc::new(test_cfg(dir.path()));
        // A volume from elsewhere: readable metadata owned by someone else.
        fs::create_dir_all(&cfg.metadata_dir).unwrap();
        std::os::unix::fs::chown(&cfg.metadata_dir, Some(1234), Some(1234)).unwrap();
        fs::set_permissions(&cfg.metadata_dir, fs::Permissions::from_mode(0o755)).unwrap();
        for name in ["session_users.json", "users_info.json"] {
            let p = cfg.metadata_dir.join(name);
            fs::write(&p, "{}").unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
            std::os::unix::fs::chown(&p, Some(1234), Some(1234)).unwrap();
        }
        let users = Users::load(cfg.clone());
        users.ensure("s").unwrap();
        let m = fs::metadata(&cfg.metadata_dir).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (0, 0, 0o700));
        for name in ["session_users.json", "users_info.json"] {
            let m = fs::metadata(cfg.metadata_dir.join(name)).unwrap();
            assert_eq!(
                (m.uid(), m.gid(), m.mode() & 0o7777),
                (0, 0, 0o600),
                "{name}"
            );
        }
        // The user database keeps its owner and mode.
        let m = fs::metadata(&cfg.passwd_file).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o644);
    }

    #[test]
    fn corrupt_metadata_is_set_aside() {
        if !sys::is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let cfg = std::sync::Arc::new(test_cfg(dir.path()));
        fs::create_dir_all(&cfg.metadata_dir).unwrap();
        fs::write(cfg.metadata_dir.join("session_users.json"), "{not json").unwrap();
        let users = Users::load(cfg.clone());
        assert!(users.lookup("x").is_none());
        let names: Vec<_> = fs::read_dir(&cfg.metadata_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names
                .iter()
                .any(|n| n.starts_with("session_users.json.corrupt-")),
            "{names:?}"
        );
    }
}

//! Thin wrappers around the libc calls the agent needs: per-thread file-system credentials,
//! child set-up hooks (`pre_exec`), process-group signals, orphan reaping and pseudo-terminals.
#![expect(
    unsafe_code,
    reason = "raw libc calls for credentials, signals, reaping and PTYs; each call is commented"
)]

use std::ffi::CStr;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Identity of a session user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ident {
    pub uid: u32,
    pub gid: u32,
}

/// Runs `f` on the current (blocking) thread with the file-system credentials of `id`:
/// fsuid/fsgid switched and supplementary groups dropped, for this thread only. Root's
/// file-system capabilities are cleared by the kernel while the fsuid is non-zero.
/// Every switch is read back (`setfsuid(-1)` returns the current value) and `f` only runs
/// when all of them took effect: otherwise it is an error and `f` is not called (fail closed).
/// The previous credentials are restored afterwards, even when `f` panics.
pub fn with_fs_creds<T>(id: Ident, f: impl FnOnce() -> T) -> io::Result<T> {
    struct Restore {
        groups: Vec<libc::gid_t>,
    }
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: raw syscalls act on this thread's credentials only; the pointer and
            // length describe a valid vector.
            unsafe {
                libc::syscall(libc::SYS_setfsuid, 0);
                libc::syscall(libc::SYS_setfsgid, 0);
                libc::syscall(libc::SYS_setgroups, self.groups.len(), self.groups.as_ptr());
            }
        }
    }
    let mut groups = vec![0 as libc::gid_t; 256];
    // SAFETY: getgroups writes at most `groups.len()` entries into the buffer.
    let n = unsafe { libc::getgroups(groups.len() as libc::c_int, groups.as_mut_ptr()) };
    groups.truncate(usize::try_from(n).unwrap_or(0));
    let _restore = Restore { groups };
    // SAFETY: raw syscalls (not the glibc wrappers, which would broadcast to every thread)
    // change this thread's credentials only. setgroups(0, NULL) drops supplementary groups;
    // setfsuid/setfsgid(-1) change nothing and return the current value.
    let (groups_rc, fsgid, fsuid) = unsafe {
        let groups_rc = libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>());
        libc::syscall(libc::SYS_setfsgid, id.gid);
        libc::syscall(libc::SYS_setfsuid, id.uid);
        (
            groups_rc,
            libc::syscall(libc::SYS_setfsgid, u32::MAX),
            libc::syscall(libc::SYS_setfsuid, u32::MAX),
        )
    };
    if groups_rc != 0 || fsgid != i64::from(id.gid) || fsuid != i64::from(id.uid) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "file-system credentials not switched: fsuid {fsuid} (wanted {}), fsgid {fsgid} \
                 (wanted {}), setgroups rc {groups_rc}",
                id.uid, id.gid
            ),
        ));
    }
    Ok(f())
}

/// The `oom_score_adj` of session processes: the OOM killer picks them before the agent.
const SESSION_OOM_SCORE_ADJ: &[u8] = b"800\n";

/// Sets the agent's own `oom_score_adj`: `value` when the kernel allows it (lowering needs
/// `CAP_SYS_RESOURCE`), else at least 0. Returns the value that holds afterwards.
pub fn set_own_oom_score_adj(value: i32) -> io::Result<i32> {
    let path = "/proc/self/oom_score_adj";
    if std::fs::write(path, format!("{value}\n")).is_err() {
        // Without the capability only raising is allowed: make sure it is not above 0.
        let current: i32 = std::fs::read_to_string(path)?.trim().parse().unwrap_or(0);
        if current > 0 {
            std::fs::write(path, "0\n")?;
        }
    }
    std::fs::read_to_string(path)?
        .trim()
        .parse()
        .map_err(|e| io::Error::other(format!("cannot parse {path}: {e}")))
}

/// Sets the process umask (the agent's own work: 077).
pub fn set_umask(mask: u32) {
    // SAFETY: umask cannot fail.
    unsafe {
        libc::umask(mask);
    }
}

/// The part of a child's set-up that turns it into the session user: raise its
/// `oom_score_adj` (while still root, so that /proc/self is writable), private umask 077,
/// no supplementary groups, gid, uid (all checked, and read back), then `cwd`.
///
/// # Safety
/// Only call between fork and exec: async-signal-safe calls only.
unsafe fn become_user(id: Ident, cwd: &CStr) -> io::Result<()> {
    // SAFETY: open/write/close/umask/setgroups/setgid/setuid/getuid/chdir are
    // async-signal-safe; the buffers are valid for their lengths.
    unsafe {
        raise_oom_score_adj();
        libc::umask(0o077);
        if libc::getuid() == 0 && libc::setgroups(0, std::ptr::null()) < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::setgid(id.gid) < 0 || libc::setuid(id.uid) < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::getuid() != id.uid
            || libc::geteuid() != id.uid
            || libc::getgid() != id.gid
            || libc::getegid() != id.gid
        {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        if libc::chdir(cwd.as_ptr()) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn cstring(p: &std::path::Path) -> io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// Configures `cmd` to run as `id` (no supplementary groups, umask 077, high
/// `oom_score_adj`) in a new session, with working directory `cwd` (entered as the user).
/// `extra_fds` are `(source, target)` pairs duplicated into the child before exec.
pub fn user_command(
    cmd: &mut Command,
    id: Ident,
    cwd: &std::path::Path,
    extra_fds: Vec<(RawFd, RawFd)>,
) -> io::Result<()> {
    let cwd = cstring(cwd)?;
    // SAFETY: the hook only calls async-signal-safe functions (setsid, dup2, fcntl, signal,
    // sigprocmask and those of `become_user`) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            dup_fds(&extra_fds)?;
            become_user(id, &cwd)?;
            reset_signals();
            Ok(())
        });
    }
    Ok(())
}

/// Configures `cmd` for the spare Python interpreter: like [`user_command`] (new session,
/// `oom_score_adj` 800, umask 077, default signals, `extra_fds`) but it stays **root** and starts
/// in `/`: it drops to a session user itself when adopted (`driver.py`), before any user code.
pub fn spare_command(cmd: &mut Command, extra_fds: Vec<(RawFd, RawFd)>) -> io::Result<()> {
    // SAFETY: async-signal-safe calls only between fork and exec (setsid, fcntl, dup2, open,
    // write, close, umask, chdir, signal, sigprocmask).
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            dup_fds(&extra_fds)?;
            raise_oom_score_adj();
            libc::umask(0o077);
            if libc::chdir(c"/".as_ptr()) < 0 {
                return Err(io::Error::last_os_error());
            }
            reset_signals();
            Ok(())
        });
    }
    Ok(())
}

/// Duplicates each `(source, target)` pair into place; sources are moved out of the way first
/// so that no target clobbers a source.
///
/// # Safety
/// Only call between fork and exec.
unsafe fn dup_fds(extra_fds: &[(RawFd, RawFd)]) -> io::Result<()> {
    // SAFETY: fcntl and dup2 are async-signal-safe.
    unsafe {
        let mut high = [0 as RawFd; 8];
        for (i, &(src, _)) in extra_fds.iter().enumerate().take(8) {
            high[i] = libc::fcntl(src, libc::F_DUPFD_CLOEXEC, 64);
            if high[i] < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        for (i, &(_, dst)) in extra_fds.iter().enumerate().take(8) {
            if libc::dup2(high[i], dst) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// Raises this (forked, still root) process's `oom_score_adj` to the session value.
///
/// # Safety
/// Only call between fork and exec.
unsafe fn raise_oom_score_adj() {
    // SAFETY: open/write/close are async-signal-safe; the buffer is valid for its length.
    unsafe {
        let fd = libc::open(
            c"/proc/self/oom_score_adj".as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        );
        if fd >= 0 {
            libc::write(
                fd,
                SESSION_OOM_SCORE_ADJ.as_ptr().cast(),
                SESSION_OOM_SCORE_ADJ.len(),
            );
            libc::close(fd);
        }
    }
}

/// Configures `cmd` to run as `id` (as [`user_command`]) on the pseudo-terminal `slave` as
/// its controlling terminal.
pub fn pty_command(
    cmd: &mut Command,
    id: Ident,
    cwd: &std::path::Path,
    slave: RawFd,
) -> io::Result<()> {
    let cwd = cstring(cwd)?;
    // SAFETY: async-signal-safe calls only between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::ioctl(slave, libc::TIOCSCTTY, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            for fd in 0..3 {
                if libc::dup2(slave, fd) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            become_user(id, &cwd)?;
            reset_signals();
            Ok(())
        });
    }
    Ok(())
}

/// Restores default dispositions for the signals the agent handles, and an empty mask.
///
/// # Safety
/// Only call between fork and exec.
unsafe fn reset_signals() {
    // SAFETY: signal and sigprocmask are async-signal-safe; the set is initialised first.
    unsafe {
        for sig in [
            libc::SIGHUP,
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGPIPE,
            libc::SIGCHLD,
        ] {
            libc::signal(sig, libc::SIG_DFL);
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// Sends `sig` to the process group `pgid`; errors (already gone) are ignored.
pub fn kill_group(pgid: i32, sig: i32) {
    if pgid > 1 {
        // SAFETY: plain kill(2) on a negative pid (a process group).
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

/// Sends `sig` to the process `pid`; errors (already gone) are ignored.
pub fn kill(pid: i32, sig: i32) {
    if pid > 1 {
        // SAFETY: plain kill(2) on one positive pid.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Makes the agent the reaper of orphaned descendants when it is not PID 1.
pub fn become_subreaper() {
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
}

/// Reaps the zombie child `pid` without blocking.
pub fn reap(pid: i32) -> bool {
    let mut status = 0;
    // SAFETY: waitpid on one specific pid, WNOHANG.
    unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) == pid }
}

/// The agent's own process id.
pub fn getpid() -> i32 {
    // SAFETY: getpid cannot fail.
    unsafe { libc::getpid() }
}

/// Whether the agent runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Creates a close-on-exec pipe: `(read end, write end)`.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills two descriptors which we then own.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sets `O_NONBLOCK` on `fd`.
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor owned by the caller.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Opens a new pseudo-terminal pair of size `rows`×`cols`: `(master, slave)`.
/// The master is non-blocking and close-on-exec.
pub fn open_pty(rows: u16, cols: u16) -> io::Result<(OwnedFd, OwnedFd)> {
    // SAFETY: posix_openpt returns a new descriptor we own.
    let master = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if master < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: master was just opened and is owned by nobody else.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    let mfd = std::os::fd::AsRawFd::as_raw_fd(&master);
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: grantpt/unlockpt on our master; ptsname_r writes a NUL-terminated name into buf.
    unsafe {
        if libc::grantpt(mfd) < 0 || libc::unlockpt(mfd) < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::ptsname_r(mfd, name.as_mut_ptr(), name.len()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: ptsname_r succeeded, so the buffer holds a NUL-terminated string.
    let path = unsafe { CStr::from_ptr(name.as_ptr()) };
    // SAFETY: open on a valid C string; the result is owned by us.
    let slave = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if slave < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: slave was just opened.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    set_winsize(mfd, rows, cols)?;
    set_nonblocking(mfd)?;
    Ok((master, slave))
}

/// Sets the window size of the terminal behind `fd`.
pub fn set_winsize(fd: RawFd, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize struct from a valid pointer.
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Non-blocking read from a raw descriptor.
pub fn read_fd(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: read into a valid mutable buffer of the given length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Non-blocking write to a raw descriptor.
pub fn write_fd(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: write from a valid buffer of the given length.
    let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `fchown` that works on an open descriptor.
pub fn fchown(fd: RawFd, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: fchown on a descriptor owned by the caller.
    if unsafe { libc::fchown(fd, uid, gid) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Locks `fd` exclusively with a POSIX record lock (waits).
pub fn lock_file(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_SETLKW with a fully initialised flock struct.
    unsafe {
        let mut fl: libc::flock = std::mem::zeroed();
        fl.l_type = libc::F_WRLCK as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        if libc::fcntl(fd, libc::F_SETLKW, &fl) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Decodes a wait status into `(code, signal)`.
pub fn decode_status(status: &std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        code
    } else if let Some(sig) = status.signal() {
        -sig
    } else {
        -1
    }
}

/// Registers a non-blocking descriptor with the tokio reactor.
pub fn async_fd(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd stays open, and always returns the same descriptor, for as long as
    // the AsyncFd owns it.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(|e| io::Error::other(e.to_string()))
}

/// Opens the directory `path` itself (never a symbolic link there) as an `O_PATH` descriptor.
pub fn open_dir_nofollow(path: &std::path::Path) -> io::Result<OwnedFd> {
    let c = cstring(path)?;
    // SAFETY: open on a valid C string; the result is owned by us.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just opened.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `openat2(dir, rel, flags, mode)` with `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`: the
/// kernel refuses any step (`..`, absolute link, `/proc/…/fd` link) that would leave `dir`.
/// `ENOSYS` (kernel < 5.6) is returned as is, for the caller's fallback.
pub fn openat2_beneath(dir: RawFd, rel: &CStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let creating = flags & (libc::O_CREAT | libc::O_TMPFILE) != 0;
    // SAFETY: open_how is a plain C struct; zeroed is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = if creating { u64::from(mode) } else { 0 };
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2 reads `how` (of the size passed) and the C string; the result is owned
    // by us.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            rel.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and fits an int.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `openat(dir, name, flags | O_NOFOLLOW | O_CLOEXEC, mode)` for one path component.
pub fn openat_nofollow(dir: RawFd, name: &CStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: openat on a valid C string; the result is owned by us.
    let fd = unsafe {
        libc::openat(
            dir,
            name.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just opened.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `mkdirat(dir, name, mode)`.
pub fn mkdirat(dir: RawFd, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: mkdirat on a valid C string.
    if unsafe { libc::mkdirat(dir, name.as_ptr(), mode as libc::mode_t) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `fchmod(fd, mode)`.
pub fn fchmod(fd: RawFd, mode: u32) -> io::Result<()> {
    // SAFETY: fchmod on a descriptor owned by the caller.
    if unsafe { libc::fchmod(fd, mode as libc::mode_t) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Clears `O_NONBLOCK` on `fd`.
pub fn set_blocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor owned by the caller.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// An anonymous in-memory file (close-on-exec) holding `data`, positioned at its start:
/// a way to hand text to a child without putting it on its command line.
pub fn memfd_with(name: &CStr, data: &[u8]) -> io::Result<std::fs::File> {
    use std::io::{Seek, Write};
    // SAFETY: memfd_create on a valid C string; the result is owned by us.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just created.
    let mut f = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    f.write_all(data)?;
    f.rewind()?;
    Ok(f)
}

/// Tries to mount a fresh `/proc` with `hidepid=invisible` over `/proc` (needs
/// `CAP_SYS_ADMIN`): processes of other users become invisible to session users.
pub fn remount_proc_hidepid() -> io::Result<()> {
    let mut result = Ok(());
    // Kernels before 5.8 only know the numeric form.
    for options in [c"hidepid=invisible", c"hidepid=2"] {
        // SAFETY: mount with valid C strings; remounting only changes the per-mount options.
        let rc = unsafe {
            libc::mount(
                c"proc".as_ptr(),
                c"/proc".as_ptr(),
                c"proc".as_ptr(),
                libc::MS_REMOUNT | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                options.as_ptr().cast(),
            )
        };
        if rc == 0 {
            return Ok(());
        }
        result = Err(io::Error::last_os_error());
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fs_credentials_that_did_not_switch_fail_closed() {
        // Issue 9: a setfsuid that silently failed left the operation running with root's
        // file-system rights. A thread without CAP_SETUID cannot switch: `f` must not run.
        std::thread::spawn(|| {
            if is_root() {
                // SAFETY: raw setresuid changes this test thread's credentials only (the
                // glibc wrapper would change every thread of the test process).
                let rc = unsafe { libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534) };
                assert_eq!(rc, 0);
            }
            let mut ran = false;
            let r = with_fs_creds(
                Ident {
                    uid: 12345,
                    gid: 12345,
                },
                || ran = true,
            );
            assert!(r.is_err(), "switch reported as done");
            assert!(!ran, "the operation ran without the user's credentials");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn fs_credentials_switch_and_are_restored() {
        if !is_root() {
            return;
        }
        std::thread::spawn(|| {
            let id = Ident {
                uid: 12345,
                gid: 12346,
            };
            // SAFETY: setfsuid/setfsgid(-1) only read this thread's values.
            let read = || unsafe {
                (
                    libc::syscall(libc::SYS_setfsuid, u32::MAX),
                    libc::syscall(libc::SYS_setfsgid, u32::MAX),
                )
            };
            assert_eq!(with_fs_creds(id, read).unwrap(), (12345, 12346));
            assert_eq!(read(), (0, 0));
        })
        .join()
        .unwrap();
    }
}

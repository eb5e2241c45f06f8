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
/// The previous credentials are restored afterwards, even when `f` panics.
pub fn with_fs_creds<T>(id: Ident, f: impl FnOnce() -> T) -> T {
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
    // change this thread's credentials only. setgroups(0, NULL) drops supplementary groups.
    unsafe {
        libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>());
        libc::syscall(libc::SYS_setfsgid, id.gid);
        libc::syscall(libc::SYS_setfsuid, id.uid);
    }
    f()
}

/// Configures `cmd` to run as `id` (no supplementary groups) in a new session.
/// `extra_fds` are `(source, target)` pairs duplicated into the child before exec.
pub fn user_command(cmd: &mut Command, id: Ident, extra_fds: Vec<(RawFd, RawFd)>) {
    cmd.uid(id.uid).gid(id.gid);
    // SAFETY: the hook only calls async-signal-safe functions (setsid, dup2, fcntl, signal,
    // sigprocmask) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            // Move the sources out of the way first so that no target clobbers a source.
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
            reset_signals();
            Ok(())
        });
    }
}

/// Configures `cmd` to run as `id` on the pseudo-terminal `slave` as its controlling terminal.
pub fn pty_command(cmd: &mut Command, id: Ident, slave: RawFd) {
    cmd.uid(id.uid).gid(id.gid);
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
            reset_signals();
            Ok(())
        });
    }
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

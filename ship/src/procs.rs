//! Child-process bookkeeping: the agent's own children (whose exit status it reports) are
//! registered, every other zombie child (orphans re-parented to the agent) is reaped by a
//! SIGCHLD-driven reaper that never touches registered pids. Process groups of session work
//! are tracked for shutdown.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use crate::{St, sys};

/// Registered children and process groups.
#[derive(Debug, Default)]
pub struct Procs {
    owned: Mutex<HashSet<i32>>,
    groups: Mutex<HashSet<i32>>,
}

impl Procs {
    /// Spawns `cmd` and registers the child (and its process group, which the set-up hooks
    /// make equal to its pid) atomically with respect to the reaper.
    pub fn spawn(
        &self,
        cmd: &mut tokio::process::Command,
    ) -> std::io::Result<tokio::process::Child> {
        let mut owned = self.owned.lock().unwrap_or_else(|e| e.into_inner());
        let child = cmd.spawn()?;
        if let Some(pid) = child.id() {
            let pid = pid as i32;
            owned.insert(pid);
            self.groups
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(pid);
        }
        Ok(child)
    }

    /// Forgets a child after its status was collected; its group is forgotten too.
    pub fn release(&self, pid: i32) {
        self.owned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&pid);
        self.groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&pid);
    }

    /// Every tracked process group.
    pub fn groups(&self) -> Vec<i32> {
        self.groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect()
    }

    /// Kills, with SIGKILL, every process of the session user `uid` that belongs to the unit
    /// `sid` (a foreground command, background process, interpreter or terminal: each runs
    /// in a session of its own) or to no live unit at all — that is, also everything the
    /// unit started in a new session or process group (`setsid`, `nohup … &`, double forks).
    /// Processes in the sessions of the user's other live units (its interpreter, terminals,
    /// background processes, concurrent commands) are spared: a process can leave its session
    /// only for a new one, never join an existing one, so those sessions cannot be used to
    /// hide. Repeats until no such process is left (bounded: a fork bomb outrunning 200
    /// rounds is left to the container's pid limit). Blocking.
    pub fn kill_unit(&self, uid: u32, sid: i32) {
        self.kill_matching(uid, |s, live| s == sid || !live);
    }

    /// Kills every process of the session user `uid`, whatever unit it belongs to (shutdown).
    pub fn kill_user(&self, uid: u32) {
        self.kill_matching(uid, |_, _| true);
    }

    /// The loop of [`Self::kill_unit`]: `victim(session id, in a live unit)`.
    fn kill_matching(&self, uid: u32, victim: impl Fn(i32, bool) -> bool) {
        for round in 0..200 {
            let victims: Vec<i32> = {
                // Held while scanning and signalling: a unit being spawned is registered
                // before any scan can see it.
                let _owned = self.owned.lock().unwrap_or_else(|e| e.into_inner());
                let groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
                let victims: Vec<i32> = processes_of(uid)
                    .into_iter()
                    .filter(|&(_, s)| victim(s, groups.contains(&s)))
                    .map(|(pid, _)| pid)
                    .collect();
                for &pid in &victims {
                    sys::kill(pid, libc::SIGKILL);
                }
                victims
            };
            if victims.is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(if round < 10 { 5 } else { 20 }));
        }
        tracing::warn!(uid, "session processes survived 200 kill rounds");
    }

    /// [`Self::kill_unit`] on the blocking pool.
    pub async fn kill_unit_async(state: &St, uid: u32, sid: i32) {
        let st = state.clone();
        let _ = tokio::task::spawn_blocking(move || st.procs.kill_unit(uid, sid)).await;
    }

    /// Reaps zombie children that are not registered.
    fn reap_orphans(&self) {
        let owned = self.owned.lock().unwrap_or_else(|e| e.into_inner());
        match own_children() {
            // Only the agent's own children are looked at: `waitpid(WNOHANG)` reaps those
            // that have exited and leaves running ones alone.
            Some(children) => {
                for pid in children {
                    if !owned.contains(&pid) {
                        sys::reap(pid);
                    }
                }
            }
            None => reap_by_scanning_proc(&owned),
        }
    }
}

/// The agent's children, from `/proc/self/task/<tid>/children` (every thread's list: a child
/// belongs to the thread that forked it, orphans to the thread they were re-parented to).
/// `None` when the kernel does not provide these files.
fn own_children() -> Option<Vec<i32>> {
    let mut pids = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        match std::fs::read_to_string(task.path().join("children")) {
            Ok(list) => pids.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            ),
            // The thread exited meanwhile: its children moved to another thread, still listed.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && task.path().exists() => {
                return None;
            }
            Err(_) => {}
        }
    }
    Some(pids)
}

/// The pids listed in `/proc`.
fn proc_pids() -> impl Iterator<Item = i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
}

/// `(state, ppid, process group, session)` of a process, from `/proc/<pid>/stat`.
pub(crate) fn proc_stat(pid: i32) -> Option<(String, i32, i32, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid pgrp session …": comm may contain anything, so split after the
    // last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.to_owned();
    let mut num = || f.next()?.parse::<i32>().ok();
    Some((state, num()?, num()?, num()?))
}

/// Fallback for kernels without `/proc/<pid>/task/<tid>/children`: every process in `/proc`
/// whose parent is the agent and which is a zombie.
fn reap_by_scanning_proc(owned: &HashSet<i32>) {
    let me = sys::getpid();
    for pid in proc_pids().filter(|p| !owned.contains(p)) {
        if proc_stat(pid).is_some_and(|(state, ppid, _, _)| state == "Z" && ppid == me) {
            sys::reap(pid);
        }
    }
}

/// Sends `sig` to every process of the session `sid` (whatever its process group: job
/// control gives every job of an interactive shell a group of its own).
pub fn signal_session(sid: i32, sig: i32) {
    if sid <= 1 {
        return;
    }
    for pid in proc_pids() {
        if proc_stat(pid).is_some_and(|(_, _, _, s)| s == sid) {
            sys::kill(pid, sig);
        }
    }
}

/// Whether any non-zombie process belongs to one of `groups`.
pub fn any_alive(groups: &[i32]) -> bool {
    proc_pids().any(|pid| {
        proc_stat(pid).is_some_and(|(state, _, pgrp, _)| state != "Z" && groups.contains(&pgrp))
    })
}

/// Every live (not zombie) process of `uid` (real or effective) as `(pid, session id)`.
fn processes_of(uid: u32) -> Vec<(i32, i32)> {
    proc_pids()
        .filter(|pid| {
            let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
                return false;
            };
            let ids: Vec<u32> = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|l| {
                    l.split_whitespace()
                        .filter_map(|x| x.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            ids.first() == Some(&uid) || ids.get(1) == Some(&uid)
        })
        .filter_map(|pid| {
            let (state, _, _, sid) = proc_stat(pid)?;
            (state != "Z" && state != "X").then_some((pid, sid))
        })
        .collect()
}

/// Starts the orphan reaper: on every SIGCHLD and once a second.
pub fn spawn_reaper(state: St) {
    tokio::spawn(async move {
        let mut sigchld =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()).ok();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            match sigchld.as_mut() {
                Some(s) => {
                    tokio::select! {
                        _ = s.recv() => {}
                        _ = tick.tick() => {}
                    }
                }
                None => {
                    tick.tick().await;
                }
            }
            let st = state.clone();
            let _ = tokio::task::spawn_blocking(move || st.procs.reap_orphans()).await;
        }
    });
}

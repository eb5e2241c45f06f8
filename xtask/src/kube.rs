//! A real single-node Kubernetes for the tests, built offline from Debian's source package.
//!
//! * **build**: Debian's `kubernetes` source package (upstream v1.20.2, with `vendor/`) is
//!   downloaded with a private deb-src list (`/etc/apt` is untouched), patched (Debian's
//!   `reflect2` 1.0.2 replaces the vendored 1.0.1, which panics in the API server; the sandbox
//!   and guaranteed OOM score adjustments become 0, which this kind of machine can set), and
//!   `kube-apiserver`, `kube-controller-manager`, `kube-scheduler` and `kubelet` are built with
//!   Go (`CGO_ENABLED=0`). The pause container is `build/pause/linux/pause.c` built with
//!   `gcc -static` and `docker import`ed. The binaries are cached under
//!   `/var/cache/bay/kubernetes/<key>`, where the key hashes every input (source package,
//!   patches, flags, Go version, this recipe's version): a later run with the same inputs skips
//!   the build entirely.
//! * **up**: etcd (Debian's), the API server (secure port on 127.0.0.1, token auth, our own CA,
//!   service-account keys generated), the controller manager, the scheduler and the kubelet
//!   (dockershim on the local Docker Engine), each started in its own process group with its
//!   PID recorded; state lives in [`STATE_DIR`]. The node is waited Ready and its
//!   `not-ready` taint removed (the node lifecycle controller is off). Storage: a default
//!   StorageClass [`STORAGE_CLASS`] and a tiny provisioner (this binary, `kube provision`) that
//!   gives every pending claim of that class its own hostPath PersistentVolume, and deletes the
//!   volume (and its directory) once its claim is gone.
//! * **down**: every process stopped by its PID, the Docker containers the kubelet created
//!   (`io.kubernetes.docker.type` label) removed, the mounts under the state directory (the
//!   kubelet bind-mounts its root directory onto itself, secrets are tmpfs) unmounted, the
//!   sysctls the kubelet changes restored to the values read before `up`, `/var/log/pods` and
//!   `/var/log/containers` put back as they were, the state directory removed.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use crate::cmd;

/// Bump when the build recipe changes in a way the other inputs of the key do not show.
const RECIPE_VERSION: u32 = 1;
/// Where the sources and the built binaries are kept between runs.
const CACHE_ROOT: &str = "/var/cache/bay/kubernetes";
/// The running cluster's state (PIDs, certificates, etcd, the kubelet's root, volumes).
pub const STATE_DIR: &str = "/var/lib/bay-kube";
/// The default StorageClass whose claims the provisioner serves.
pub const STORAGE_CLASS: &str = "bay-local";
/// The node's name (`--hostname-override`), an IP: the kubelet takes it as the node's address
/// (it refuses a loopback `--node-ip`, and the API server reaches the kubelet, for logs and
/// exec, at that address).
const NODE_NAME: &str = "127.0.0.1";
/// The Debian packages the build and the cluster need.
const PACKAGES: &[&str] = &[
    "golang-go",
    "rsync",
    "golang-github-modern-go-reflect2-dev",
    "etcd-server",
    "gcc",
    "libc6-dev",
    "openssl",
];
/// The components built from the source tree.
const BINARIES: &[&str] = &[
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
];
/// `make` arguments and environment of the Go build.
const MAKE_ARGS: &[&str] = &[
    "WHAT=cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler cmd/kubelet",
    "GOLDFLAGS=-s -w",
];
const MAKE_ENV: &[(&str, &str)] = &[("CGO_ENABLED", "0")];
/// Patch 2: (file, original, replacement). This machine cannot set negative `oom_score_adj`.
const OOM_PATCHES: &[(&str, &str, &str)] = &[
    (
        "pkg/kubelet/dockershim/docker_sandbox.go",
        "defaultSandboxOOMAdj int = -998",
        "defaultSandboxOOMAdj int = 0",
    ),
    (
        "pkg/kubelet/qos/policy.go",
        "guaranteedOOMScoreAdj int = -997",
        "guaranteedOOMScoreAdj int = 0",
    ),
];
/// Patch 1: the vendored package replaced by Debian's copy.
const REFLECT2_VENDOR: &str = "vendor/github.com/modern-go/reflect2";
const REFLECT2_DEBIAN: &str = "/usr/share/gocode/src/github.com/modern-go/reflect2";
const REFLECT2_PACKAGE: &str = "golang-github-modern-go-reflect2-dev";
const PAUSE_CFLAGS: &[&str] = &["-Os", "-Wall", "-Werror", "-static", "-DVERSION=v3.4-bay"];
/// The sysctls the kubelet sets; read before `up`, restored by `down`.
const SYSCTLS: &[&str] = &[
    "vm/overcommit_memory",
    "kernel/panic",
    "kernel/panic_on_oops",
];
/// Directories the kubelet writes outside its root directory (not configurable in v1.20).
const LOG_DIRS: &[&str] = &["/var/log/pods", "/var/log/containers"];
/// Stop order: the kubelet (and the provisioner) first, so that nothing recreates containers.
const COMPONENTS_STOP_ORDER: &[&str] = &[
    "provisioner",
    "kubelet",
    "kube-scheduler",
    "kube-controller-manager",
    "kube-apiserver",
    "etcd",
];

// ---------------------------------------------------------------------------------------------
// Commands

/// `cargo xtask kube <action>`.
#[derive(Debug, clap::Args)]
pub struct KubeArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Build (or find in the cache) the Kubernetes binaries and the pause image.
    Build,
    /// Start the cluster and leave it running; prints the kubeconfig's path.
    Up,
    /// Tear the cluster down completely (idempotent).
    Down,
    /// Say whether a cluster is running, and its kubeconfig.
    Status,
    /// The storage provisioner loop (started by `up`; not for direct use).
    #[command(hide = true)]
    Provision,
}

pub fn run_kube(args: KubeArgs) -> anyhow::Result<()> {
    match args.action {
        Action::Build => build().map(|_| ()),
        Action::Up => {
            if running() {
                bail!(
                    "a cluster is already running (kubeconfig {}); `cargo xtask kube down` first",
                    kubeconfig_path().display()
                );
            }
            let artifacts = build()?;
            watch_signals();
            up(&artifacts)?;
            println!("{}", kubeconfig_path().display());
            Ok(())
        }
        Action::Down => down(),
        Action::Status => {
            if running() {
                println!("up {}", kubeconfig_path().display());
            } else {
                println!("down");
            }
            Ok(())
        }
        Action::Provision => provision_loop(),
    }
}

/// `cargo xtask with-kube -- <command>`: a cluster (started for the command, or the one
/// `cargo xtask kube up` left running), a fresh namespace, the command with the test
/// environment set, then teardown (or only the namespace deleted, for a cluster left running).
#[derive(Debug, clap::Args)]
pub struct WithArgs {
    /// The command to run (e.g. `cargo nextest run -p bay-driver-kube`).
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub fn run_with(args: WithArgs) -> anyhow::Result<()> {
    let session = Session::start()?;
    let mut command = cmd::wrapped_command(&args.command)?;
    session.set_env(&mut command);
    let result = cmd::run(&mut command);
    drop(session);
    result
}

// ---------------------------------------------------------------------------------------------
// A test session: the cluster and a namespace, torn down on drop

/// A cluster for a test run; see [`Session::start`].
#[derive(Debug)]
pub struct Session {
    namespace: String,
    /// Whether this session started the cluster (and so tears it down).
    owned: bool,
}

impl Session {
    /// Builds what is missing, starts the cluster unless one is running (a cluster left by
    /// `cargo xtask kube up` is used as it is, and left running), creates a namespace.
    pub fn start() -> anyhow::Result<Self> {
        let artifacts = build()?;
        let owned = !running();
        OWNED.store(owned, Ordering::SeqCst);
        watch_signals();
        if owned {
            up(&artifacts)?;
        } else {
            eprintln!(
                "using the running cluster (kubeconfig {}); it is left running",
                kubeconfig_path().display()
            );
        }
        let session = Self {
            namespace: format!("bay-test-{}", std::process::id()),
            owned,
        };
        cmd::run(kubectl().args(["create", "namespace", &session.namespace]))?;
        Ok(session)
    }

    /// Sets `BAY_TEST_KUBECONFIG`, `BAY_TEST_KUBE_NAMESPACE` and
    /// `BAY_TEST_KUBE_STORAGE_CLASS` on `command`.
    pub fn set_env(&self, command: &mut Command) {
        command
            .env("BAY_TEST_KUBECONFIG", kubeconfig_path())
            .env("BAY_TEST_KUBE_NAMESPACE", &self.namespace)
            .env("BAY_TEST_KUBE_STORAGE_CLASS", STORAGE_CLASS);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.owned {
            if let Err(e) = down() {
                eprintln!("error: tearing the Kubernetes cluster down: {e:#}");
            }
        } else {
            let _ =
                cmd::run(kubectl().args(["delete", "namespace", &self.namespace, "--wait=false"]));
        }
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// Whether this process started the running cluster (and so tears it down on SIGTERM).
static OWNED: AtomicBool = AtomicBool::new(false);
/// The process group of a [`BackgroundBuild`] still running (0: none), ended on SIGTERM.
static BUILD_GROUP: AtomicU32 = AtomicU32::new(0);
/// The components this process started: reaped by `down` (no zombies left behind).
static CHILDREN: Mutex<Vec<std::process::Child>> = Mutex::new(Vec::new());
static TEARDOWN: Mutex<()> = Mutex::new(());

/// From now on SIGINT no longer kills xtask: the command it runs gets the terminal's SIGINT
/// and exits, and xtask tears down. On SIGTERM/SIGHUP (nothing else is told), the cluster is
/// torn down right away (when this process started it) and xtask exits; so is a background
/// build.
pub fn watch_signals() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
            eprintln!("warning: cannot watch signals; Ctrl-C may leave the cluster running");
            return;
        };
        std::thread::spawn(move || {
            for signal in signals.forever() {
                INTERRUPTED.store(true, Ordering::SeqCst);
                if signal != SIGINT {
                    end_group(BUILD_GROUP.load(Ordering::SeqCst));
                    if OWNED.load(Ordering::SeqCst) {
                        let _ = down();
                    }
                    std::process::exit(128 + signal);
                }
                eprintln!("interrupted: the cluster is torn down when the command has stopped");
            }
        });
    });
}

fn check_interrupted() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Build

/// `cargo xtask kube build` in the background (its output in a log file), so that a cold Go
/// build overlaps the rest of `cargo xtask test` (lints, images, doc tests): the build uses less
/// than one core on average. The Debian packages are installed first, in the foreground, so that
/// no two apt runs meet at dpkg's lock. Ended (its whole process group) when dropped unfinished.
#[derive(Debug)]
pub struct BackgroundBuild {
    child: std::process::Child,
    log: PathBuf,
}

impl BackgroundBuild {
    pub fn start() -> anyhow::Result<Self> {
        cmd::apt_install(PACKAGES)?;
        ensure_kubectl()?;
        let log = cmd::target_dir().join("kube-build.log");
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        eprintln!(
            "building Kubernetes in the background, or finding it cached (log: {})",
            log.display()
        );
        let child = cmd::spawn_logged(
            Command::new(std::env::current_exe().context("xtask's own path")?)
                .args(["kube", "build"]),
            file,
        )?;
        BUILD_GROUP.store(child.id(), Ordering::SeqCst);
        Ok(Self { child, log })
    }

    /// Waits for the build; fails with the end of its log when it failed.
    pub fn finish(mut self) -> anyhow::Result<()> {
        let status = self
            .child
            .wait()
            .context("waiting for the Kubernetes build")?;
        BUILD_GROUP.store(0, Ordering::SeqCst);
        if !status.success() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            bail!(
                "building Kubernetes failed ({status}); the end of {}:\n{}",
                self.log.display(),
                lines[lines.len().saturating_sub(30)..].join("\n")
            );
        }
        Ok(())
    }
}

impl Drop for BackgroundBuild {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            eprintln!("stopping the background Kubernetes build");
            end_group(self.child.id());
            let _ = self.child.wait();
        }
        BUILD_GROUP.store(0, Ordering::SeqCst);
    }
}

/// SIGTERM to the process group `group` (a [`cmd::spawn_logged`] child's id); 0: none.
fn end_group(group: u32) {
    if group != 0 {
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{group}")])
            .status();
    }
}

/// What `up` needs from the build.
#[derive(Debug)]
pub struct Artifacts {
    bin: PathBuf,
    pause_image: String,
}

/// Builds the binaries and the pause image unless the cache has them for the same inputs.
pub fn build() -> anyhow::Result<Artifacts> {
    cmd::apt_install(PACKAGES)?;
    ensure_kubectl()?;
    let cache = Path::new(CACHE_ROOT);
    let dsc = download_source(cache)?;
    let key = cache_key(&dsc)?;
    let out = cache.join(&key);
    if BINARIES.iter().all(|b| out.join("bin").join(b).is_file()) && out.join("pause").is_file() {
        eprintln!("Kubernetes binaries cached in {}", out.display());
    } else {
        compile(cache, &dsc, &out)?;
    }
    let pause_image = format!("bay-kube-pause:{key}");
    if !cmd::succeeds(Command::new("docker").args(["image", "inspect", &pause_image])) {
        import_pause(&out.join("pause"), &pause_image)?;
    }
    Ok(Artifacts {
        bin: out.join("bin"),
        pause_image,
    })
}

/// kubectl drives the cluster; Debian's `kubernetes-client` when the machine has none.
fn ensure_kubectl() -> anyhow::Result<()> {
    if cmd::succeeds(Command::new("kubectl").args(["version", "--client"])) {
        return Ok(());
    }
    cmd::apt_install(&["kubernetes-client"])
}

/// Downloads Debian's `kubernetes` source package (once) with a private deb-src list made from
/// the machine's own sources; returns the `.dsc` file.
fn download_source(cache: &Path) -> anyhow::Result<PathBuf> {
    let src = cache.join("src");
    if let Some(dsc) = find_file(&src, ".dsc")? {
        return Ok(dsc);
    }
    let apt = cache.join("apt");
    let parts = apt.join("parts");
    let lists = apt.join("lists");
    for dir in [&parts, &lists.join("partial"), &src] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut sources = String::new();
    for file in [
        "/etc/apt/sources.list.d/debian.sources",
        "/etc/apt/sources.list",
    ] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if file.ends_with(".sources") {
            sources.push_str(&text.replace("Types: deb\n", "Types: deb-src\n"));
        } else {
            let lines: Vec<String> = text
                .lines()
                .filter(|l| l.trim_start().starts_with("deb "))
                .map(|l| l.replacen("deb ", "deb-src ", 1))
                .collect();
            if !lines.is_empty() {
                std::fs::write(parts.join("deb-src.list"), lines.join("\n") + "\n")?;
            }
        }
    }
    if !sources.is_empty() {
        std::fs::write(parts.join("deb-src.sources"), sources)?;
    }
    let private = |c: &mut Command| {
        c.arg("-o")
            .arg("Dir::Etc::SourceList=/dev/null")
            .arg("-o")
            .arg(format!("Dir::Etc::SourceParts={}", parts.display()))
            .arg("-o")
            .arg(format!("Dir::State::Lists={}", lists.display()));
    };
    eprintln!(
        "downloading Debian's `kubernetes` source package (34 MB) into {}",
        src.display()
    );
    let mut update = Command::new("apt-get");
    private(&mut update);
    cmd::run(update.arg("update"))?;
    let mut source = Command::new("apt-get");
    private(&mut source);
    cmd::run(
        source
            .args(["source", "--download-only", "kubernetes"])
            .current_dir(&src),
    )?;
    find_file(&src, ".dsc")?.context("apt-get source left no .dsc file")
}

fn find_file(dir: &Path, suffix: &str) -> anyhow::Result<Option<PathBuf>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(None);
    };
    for entry in entries {
        let path = entry?.path();
        if path.to_string_lossy().ends_with(suffix) {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// A hash of every input of the build.
fn cache_key(dsc: &Path) -> anyhow::Result<String> {
    let mut inputs = format!("recipe {RECIPE_VERSION}\n");
    inputs.push_str(&std::fs::read_to_string(dsc).context("reading the .dsc")?);
    let go = cmd::output(Command::new("go").arg("version"))?;
    let reflect2 =
        cmd::output(Command::new("dpkg-query").args(["-W", "-f=${Version}", REFLECT2_PACKAGE]))?;
    let gcc = cmd::output(Command::new("gcc").arg("-dumpfullversion"))?;
    let _ = writeln!(
        inputs,
        "{go}\nreflect2 {reflect2}\ngcc {gcc}\n{OOM_PATCHES:?}\n{REFLECT2_VENDOR}\n{MAKE_ARGS:?}\n\
         {MAKE_ENV:?}\n{BINARIES:?}\n{PAUSE_CFLAGS:?}"
    );
    let mut sha = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("could not start sha256sum")?;
    sha.stdin
        .take()
        .context("sha256sum's input")?
        .write_all(inputs.as_bytes())?;
    let out = sha.wait_with_output()?;
    let hex = String::from_utf8_lossy(&out.stdout);
    Ok(hex.get(..16).context("sha256sum's output")?.to_owned())
}

/// Extracts, patches and builds into `out` (atomically: a temporary directory renamed).
fn compile(cache: &Path, dsc: &Path, out: &Path) -> anyhow::Result<()> {
    let src = dsc.parent().context("the .dsc's directory")?;
    let orig = find_file(src, ".orig.tar.gz")?.context("the .orig.tar.gz of the source")?;
    let key = out
        .file_name()
        .context("key")?
        .to_string_lossy()
        .into_owned();
    let tree = cache.join("build").join(&key);
    if tree.exists() {
        std::fs::remove_dir_all(&tree)?;
    }
    std::fs::create_dir_all(&tree)?;
    eprintln!(
        "building Kubernetes v1.20.2 (kube-apiserver, kube-controller-manager, kube-scheduler, \
         kubelet) from {}: this takes ~10 minutes the first time; the result is cached in {}",
        orig.display(),
        out.display()
    );
    cmd::run(
        Command::new("tar")
            .arg("-xzf")
            .arg(&orig)
            .arg("-C")
            .arg(&tree)
            .arg("--strip-components=1"),
    )?;
    // Patch 1: Debian's reflect2 1.0.2 (1.0.1 panics in the API server on Go 1.18+).
    let vendored = tree.join(REFLECT2_VENDOR);
    std::fs::remove_dir_all(&vendored)
        .with_context(|| format!("removing {}", vendored.display()))?;
    cmd::run(
        Command::new("cp")
            .arg("-rL")
            .arg(REFLECT2_DEBIAN)
            .arg(&vendored),
    )?;
    // Patch 2: no negative OOM score adjustments.
    for (file, from, to) in OOM_PATCHES {
        let path = tree.join(file);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        if !text.contains(from) {
            bail!(
                "{} does not contain `{from}`: the patch does not apply",
                path.display()
            );
        }
        std::fs::write(&path, text.replace(from, to))?;
    }
    let home = cache.join("home");
    std::fs::create_dir_all(&home)?;
    let started = Instant::now();
    cmd::run(
        Command::new("make")
            .args(MAKE_ARGS)
            .envs(MAKE_ENV.iter().copied())
            .env_remove("GOPATH")
            .env_remove("GOFLAGS")
            .env("HOME", &home)
            .current_dir(&tree),
    )?;
    eprintln!("Go build done in {} s", started.elapsed().as_secs());
    let tmp = cache.join(format!("{key}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(tmp.join("bin"))?;
    for binary in BINARIES {
        let built = tree.join("_output/local/go/bin").join(binary);
        std::fs::copy(&built, tmp.join("bin").join(binary))
            .with_context(|| format!("copying {}", built.display()))?;
    }
    cmd::run(
        Command::new("gcc")
            .args(PAUSE_CFLAGS)
            .arg("-o")
            .arg(tmp.join("pause"))
            .arg(tree.join("build/pause/linux/pause.c")),
    )?;
    if out.exists() {
        std::fs::remove_dir_all(out)?;
    }
    std::fs::rename(&tmp, out)?;
    // The tree is 2.6 GB with Go's build cache (Kubernetes' build keeps it in `_output/`).
    std::fs::remove_dir_all(&tree)?;
    Ok(())
}

/// `docker import` of a one-file image holding the static pause binary.
fn import_pause(pause: &Path, image: &str) -> anyhow::Result<()> {
    let dir = pause.parent().context("pause's directory")?;
    cmd::pipe(
        Command::new("tar").arg("-C").arg(dir).args(["-c", "pause"]),
        Command::new("docker")
            .args([
                "import",
                "--change",
                "ENTRYPOINT [\"/pause\"]",
                "--change",
                "LABEL bay.xtask=kube-pause",
                "-",
                image,
            ])
            .stdout(Stdio::null()),
    )
}

// ---------------------------------------------------------------------------------------------
// Up

fn state() -> PathBuf {
    PathBuf::from(STATE_DIR)
}

/// The admin kubeconfig (token auth) of the running cluster.
pub fn kubeconfig_path() -> PathBuf {
    state().join("kubeconfig")
}

/// `kubectl` on the cluster's kubeconfig, with its cache in the state directory.
fn kubectl() -> Command {
    let mut c = Command::new("kubectl");
    c.arg("--kubeconfig")
        .arg(kubeconfig_path())
        .arg("--cache-dir")
        .arg(state().join("kubectl-cache"));
    c
}

/// Whether every component of a cluster started by `up` is alive.
fn running() -> bool {
    state().join("up").exists()
        && COMPONENTS_STOP_ORDER
            .iter()
            .all(|name| recorded_pid(name).is_some_and(|pid| alive(pid, name)))
}

/// Starts the cluster; on failure tears down what was started.
fn up(artifacts: &Artifacts) -> anyhow::Result<()> {
    if state().exists() {
        eprintln!("state of an earlier cluster found in {STATE_DIR}: tearing it down first");
        down()?;
    }
    let result = start(artifacts);
    if let Err(e) = result {
        let logs = log_tails();
        let _ = down();
        return Err(e.context(logs));
    }
    Ok(())
}

fn start(artifacts: &Artifacts) -> anyhow::Result<()> {
    let started = Instant::now();
    let st = state();
    for dir in [
        "pids",
        "logs",
        "pki",
        "etcd",
        "kubelet",
        "kubelet-pki",
        "dockershim",
        "volumes",
    ] {
        std::fs::create_dir_all(st.join(dir))?;
    }
    set_mode(&st, 0o700)?;
    record_host_state(&st)?;
    let pki = st.join("pki");
    certificates(&pki)?;
    let token = random_hex(32)?;
    std::fs::write(
        pki.join("tokens.csv"),
        format!("{token},bay-admin,bay-admin,\"system:masters\"\n"),
    )?;
    let [
        etcd_port,
        etcd_peer,
        api_port,
        cm_port,
        sched_port,
        kubelet_port,
        healthz,
    ] = free_ports()?;
    write_kubeconfig(api_port, &token)?;
    let p = |f: &str| pki.join(f).display().to_string();
    let bin = |b: &str| artifacts.bin.join(b);

    let etcd_url = format!("http://127.0.0.1:{etcd_port}");
    let peer_url = format!("http://127.0.0.1:{etcd_peer}");
    spawn(
        "etcd",
        Command::new("etcd")
            .arg("--name=bay")
            .arg(format!("--data-dir={}", st.join("etcd").display()))
            .arg(format!("--listen-client-urls={etcd_url}"))
            .arg(format!("--advertise-client-urls={etcd_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=bay={peer_url}")),
    )?;
    spawn(
        "kube-apiserver",
        Command::new(bin("kube-apiserver"))
            .arg(format!("--etcd-servers={etcd_url}"))
            .arg("--bind-address=127.0.0.1")
            .arg("--advertise-address=127.0.0.1")
            .arg(format!("--secure-port={api_port}"))
            .arg(format!("--cert-dir={}", pki.display()))
            .arg(format!("--tls-cert-file={}", p("apiserver.crt")))
            .arg(format!("--tls-private-key-file={}", p("apiserver.key")))
            .arg(format!("--token-auth-file={}", p("tokens.csv")))
            .arg("--service-account-issuer=https://kubernetes.default.svc")
            .arg(format!("--service-account-key-file={}", p("sa.pub")))
            .arg(format!(
                "--service-account-signing-key-file={}",
                p("sa.key")
            ))
            .arg("--service-cluster-ip-range=10.0.0.0/24")
            .arg("--authorization-mode=AlwaysAllow")
            .arg("--disable-admission-plugins=ServiceAccount")
            .arg("--kubelet-preferred-address-types=InternalIP")
            .arg("--allow-privileged=true"),
    )?;
    wait_for("the API server", 120, || {
        cmd::succeeds(kubectl().args(["get", "--raw", "/readyz"]))
    })?;
    let kubeconfig = kubeconfig_path().display().to_string();
    spawn(
        "kube-controller-manager",
        Command::new(bin("kube-controller-manager"))
            .arg(format!("--kubeconfig={kubeconfig}"))
            .arg("--controllers=*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle")
            .arg(format!(
                "--service-account-private-key-file={}",
                p("sa.key")
            ))
            .arg(format!("--root-ca-file={}", p("ca.crt")))
            .arg("--leader-elect=false")
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--secure-port={cm_port}"))
            .arg("--port=0"),
    )?;
    spawn(
        "kube-scheduler",
        Command::new(bin("kube-scheduler"))
            .arg(format!("--kubeconfig={kubeconfig}"))
            .arg("--leader-elect=false")
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--secure-port={sched_port}"))
            .arg("--port=0"),
    )?;
    let endpoint = format!("unix://{}", st.join("dockershim.sock").display());
    spawn(
        "kubelet",
        Command::new(bin("kubelet"))
            .arg(format!("--kubeconfig={kubeconfig}"))
            .arg(format!("--hostname-override={NODE_NAME}"))
            .arg("--address=127.0.0.1")
            .arg(format!("--port={kubelet_port}"))
            .arg(format!("--healthz-port={healthz}"))
            .arg("--read-only-port=0")
            .arg(format!("--root-dir={}", st.join("kubelet").display()))
            .arg(format!("--cert-dir={}", st.join("kubelet-pki").display()))
            .arg("--container-runtime=docker")
            .arg(format!("--container-runtime-endpoint={endpoint}"))
            .arg(format!("--image-service-endpoint={endpoint}"))
            .arg(format!(
                "--experimental-dockershim-root-directory={}",
                st.join("dockershim").display()
            ))
            .arg(format!(
                "--volume-plugin-dir={}",
                st.join("volume-plugins").display()
            ))
            .arg(format!(
                "--pod-infra-container-image={}",
                artifacts.pause_image
            ))
            .arg("--cgroup-driver=cgroupfs")
            .arg("--fail-swap-on=false")
            .arg("--cgroups-per-qos=false")
            .arg("--enforce-node-allocatable=")
            .arg("--make-iptables-util-chains=false")
            .arg("--image-gc-high-threshold=100")
            .arg("--eviction-hard=memory.available<1Mi,nodefs.available<1%,imagefs.available<1%")
            .arg("--oom-score-adj=0"),
    )?;
    wait_for("the node to be Ready", 300, || {
        cmd::output(kubectl().args([
            "get",
            "node",
            NODE_NAME,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]))
        .is_ok_and(|s| s == "True")
    })?;
    // The node lifecycle controller (off: it needs cloud bits) would remove this taint.
    let _ = cmd::output(kubectl().args([
        "taint",
        "nodes",
        NODE_NAME,
        "node.kubernetes.io/not-ready:NoSchedule-",
    ]));
    apply(&storage_class())?;
    spawn(
        "provisioner",
        Command::new(std::env::current_exe().context("xtask's own path")?)
            .args(["kube", "provision"]),
    )?;
    std::fs::write(st.join("up"), "")?;
    eprintln!(
        "Kubernetes v1.20.2 is up in {} s: kubeconfig {}, StorageClass {STORAGE_CLASS}",
        started.elapsed().as_secs(),
        kubeconfig_path().display()
    );
    Ok(())
}

/// Starts a component in its own process group (the terminal's Ctrl-C reaches xtask, which
/// stops the components in order), output to `logs/<name>.log`, PID in `pids/<name>`.
fn spawn(name: &str, command: &mut Command) -> anyhow::Result<()> {
    check_interrupted()?;
    let st = state();
    let log = std::fs::File::create(st.join("logs").join(format!("{name}.log")))?;
    eprintln!("starting {name}");
    let child = cmd::spawn_logged(command, log)?;
    std::fs::write(st.join("pids").join(name), child.id().to_string())?;
    CHILDREN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(child);
    Ok(())
}

/// Polls `ready` every second for up to `seconds`, failing early when a component died.
fn wait_for(what: &str, seconds: u64, mut ready: impl FnMut() -> bool) -> anyhow::Result<()> {
    eprintln!("waiting for {what}");
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if ready() {
            return Ok(());
        }
        check_interrupted()?;
        for name in COMPONENTS_STOP_ORDER {
            if let Some(pid) = recorded_pid(name)
                && !alive(pid, name)
            {
                bail!("{name} (pid {pid}) exited while waiting for {what}");
            }
        }
        if Instant::now() > deadline {
            bail!("timed out after {seconds} s waiting for {what}");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The last lines of every component's log, for an error.
fn log_tails() -> String {
    let mut out = String::from("component logs (last lines):");
    for name in COMPONENTS_STOP_ORDER {
        let path = state().join("logs").join(format!("{name}.log"));
        if let Ok(text) = std::fs::read_to_string(&path) {
            let lines: Vec<&str> = text.lines().collect();
            let _ = write!(out, "\n--- {name}");
            for line in &lines[lines.len().saturating_sub(8)..] {
                let _ = write!(out, "\n{line}");
            }
        }
    }
    out
}

fn free_ports<const N: usize>() -> anyhow::Result<[u16; N]> {
    // Hold every listener until all are chosen, so that the ports differ.
    let listeners = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("choosing free loopback ports")?;
    let mut ports = [0; N];
    for (port, l) in ports.iter_mut().zip(&listeners) {
        *port = l.local_addr()?.port();
    }
    Ok(ports)
}

fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut buf = vec![0u8; bytes];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut buf)?;
    Ok(buf.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    }))
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

/// A CA, the API server's certificate for 127.0.0.1/localhost signed by it (clients verify
/// the server: kube-rs's rustls refuses a self-signed leaf), and the service-account key pair.
fn certificates(pki: &Path) -> anyhow::Result<()> {
    let openssl = |args: &[&str]| {
        cmd::output(Command::new("openssl").args(args).current_dir(pki)).map(|_| ())
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "3650",
        "-subj",
        "/CN=bay-kube-ca",
    ])?;
    std::fs::write(
        pki.join("apiserver.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,\
         DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\n",
    )?;
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "apiserver.key",
        "-out",
        "apiserver.csr",
        "-subj",
        "/CN=kube-apiserver",
    ])?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "apiserver.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "apiserver.crt",
        "-days",
        "3650",
        "-extfile",
        "apiserver.ext",
    ])?;
    openssl(&["genrsa", "-out", "sa.key", "2048"])?;
    openssl(&["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"])?;
    Ok(())
}

fn write_kubeconfig(port: u16, token: &str) -> anyhow::Result<()> {
    let path = kubeconfig_path();
    let ca = state().join("pki/ca.crt");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: bay\n  cluster:\n    \
             server: https://127.0.0.1:{port}\n    certificate-authority: {}\nusers:\n\
             - name: bay-admin\n  user:\n    token: {token}\ncontexts:\n- name: bay\n  \
             context:\n    cluster: bay\n    user: bay-admin\n    namespace: default\n\
             current-context: bay\n",
            ca.display()
        ),
    )?;
    set_mode(&path, 0o600)
}

fn storage_class() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": STORAGE_CLASS,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": "bay.dev/xtask-hostpath",
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    })
}

fn apply(object: &serde_json::Value) -> anyhow::Result<()> {
    let mut child = kubectl()
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .context("could not start kubectl apply")?;
    child
        .stdin
        .take()
        .context("kubectl's input")?
        .write_all(object.to_string().as_bytes())?;
    let status = child.wait()?;
    if !status.success() {
        bail!("kubectl apply failed ({status}) for {object}");
    }
    Ok(())
}

/// Saves the sysctls the kubelet changes and the state of the log directories it writes.
fn record_host_state(st: &Path) -> anyhow::Result<()> {
    let mut sysctls = String::new();
    for name in SYSCTLS {
        let value = std::fs::read_to_string(Path::new("/proc/sys").join(name))
            .with_context(|| format!("reading sysctl {name}"))?;
        let _ = writeln!(sysctls, "{name} {}", value.trim());
    }
    std::fs::write(st.join("sysctls"), sysctls)?;
    let mut dirs = String::new();
    for dir in LOG_DIRS {
        match std::fs::read_dir(dir) {
            Err(_) => {
                let _ = writeln!(dirs, "{dir}");
            }
            Ok(entries) => {
                for entry in entries.flatten() {
                    let _ = writeln!(dirs, "{dir}/{}", entry.file_name().to_string_lossy());
                }
                let _ = writeln!(dirs, "{dir}/");
            }
        }
    }
    std::fs::write(st.join("log-dirs"), dirs)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Down

/// Tears the cluster down completely; idempotent, and it carries on past failures (reporting
/// the first).
pub fn down() -> anyhow::Result<()> {
    let _guard = TEARDOWN.lock().unwrap_or_else(|e| e.into_inner());
    let st = state();
    if !st.exists() {
        return Ok(());
    }
    eprintln!("tearing the Kubernetes cluster down");
    let mut errors: Vec<String> = Vec::new();
    for name in COMPONENTS_STOP_ORDER {
        if *name == "kube-scheduler" {
            // The kubelet is stopped: nothing recreates the containers it created.
            if let Err(e) = remove_kubelet_containers() {
                errors.push(format!("{e:#}"));
            }
        }
        if let Some(pid) = recorded_pid(name) {
            stop(name, pid);
        }
    }
    for child in CHILDREN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter_mut()
    {
        let _ = child.try_wait();
    }
    let unmounted = unmount_under(&st);
    if let Err(e) = restore_host_state(&st) {
        errors.push(format!("{e:#}"));
    }
    match unmounted {
        // Never delete through a mount: it would delete the mounted source.
        Err(e) => errors.push(format!("{e:#}; {} left in place", st.display())),
        Ok(()) => {
            if let Err(e) = std::fs::remove_dir_all(&st) {
                errors.push(format!("removing {}: {e}", st.display()));
            }
        }
    }
    if let Some(first) = errors.first() {
        bail!("teardown incomplete: {first} ({} error(s))", errors.len());
    }
    eprintln!("the Kubernetes cluster is down");
    Ok(())
}

fn recorded_pid(name: &str) -> Option<u32> {
    std::fs::read_to_string(state().join("pids").join(name))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether `pid` is a live (not zombie) process whose command line names `name`: a recycled
/// PID is never taken for a component.
fn alive(pid: u32, name: &str) -> bool {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let Ok(stat) = std::fs::read_to_string(proc.join("stat")) else {
        return false;
    };
    let zombie = stat
        .rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
    let cmdline = std::fs::read(proc.join("cmdline")).unwrap_or_default();
    let marker = if name == "provisioner" {
        "provision"
    } else {
        name
    };
    !zombie && String::from_utf8_lossy(&cmdline).contains(marker)
}

/// SIGTERM, then SIGKILL after 15 s.
fn stop(name: &str, pid: u32) {
    if !alive(pid, name) {
        return;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    for i in 0..150 {
        if !alive(pid, name) {
            eprintln!("stopped {name} (pid {pid})");
            return;
        }
        if i == 149 {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("killed {name} (pid {pid})");
}

/// The Docker containers the kubelet's dockershim created (sandboxes and containers).
fn remove_kubelet_containers() -> anyhow::Result<()> {
    let ids = cmd::output(Command::new("docker").args([
        "ps",
        "-aq",
        "--filter",
        "label=io.kubernetes.docker.type",
    ]))?;
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if ids.is_empty() {
        return Ok(());
    }
    cmd::output(Command::new("docker").args(["rm", "-f", "-v"]).args(&ids)).map(|_| ())
}

/// The mount points at or under `dir` (a point mounted twice comes twice), deepest first.
fn mount_points_under(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let prefix = dir.to_string_lossy().into_owned();
    let mut points: Vec<String> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mount_path)
        .filter(|p| p == &prefix || p.starts_with(&format!("{prefix}/")))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    Ok(points)
}

/// Unmounts every mount point under `dir`, deepest first (lazily when busy), trying each one
/// even after a failure; fails when any is still mounted afterwards.
fn unmount_under(dir: &Path) -> anyhow::Result<()> {
    for point in mount_points_under(dir)? {
        if !cmd::succeeds(Command::new("umount").arg(&point)) {
            let _ = cmd::run(Command::new("umount").arg("-l").arg(&point));
        }
    }
    let left = mount_points_under(dir)?;
    ensure!(left.is_empty(), "still mounted: {}", left.join(", "));
    Ok(())
}

/// `/proc/self/mountinfo` escapes space, tab, newline and backslash as octal.
fn unescape_mount_path(raw: &str) -> String {
    let mut out = Vec::new();
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&raw[i + 1..i + 4], 8)
        {
            out.push(b);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn restore_host_state(st: &Path) -> anyhow::Result<()> {
    // Every recorded value is restored even when one fails; the first failure is reported.
    let mut failed = None;
    if let Ok(text) = std::fs::read_to_string(st.join("sysctls")) {
        for line in text.lines() {
            if let Some((name, value)) = line.split_once(' ')
                && let Err(e) = std::fs::write(Path::new("/proc/sys").join(name), value)
            {
                failed.get_or_insert(format!("restoring sysctl {name}={value}: {e}"));
            }
        }
    }
    if let Ok(text) = std::fs::read_to_string(st.join("log-dirs")) {
        let recorded: BTreeSet<&str> = text.lines().collect();
        for dir in LOG_DIRS {
            if recorded.contains(dir) {
                // It did not exist before `up`.
                let _ = std::fs::remove_dir_all(dir);
            } else if recorded.contains(format!("{dir}/").as_str()) {
                for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                    let path = entry.path();
                    if !recorded.contains(path.to_string_lossy().as_ref()) {
                        let _ =
                            std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
                    }
                }
            }
        }
    }
    match failed {
        Some(e) => bail!(e),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// The provisioner

/// Every 2 s: each pending claim of [`STORAGE_CLASS`] gets a hostPath volume of its size bound
/// to it; each of our volumes whose claim is gone (Released/Failed) is deleted with its data.
fn provision_loop() -> anyhow::Result<()> {
    let volumes = state().join("volumes");
    loop {
        if let Err(e) = provision_once(&volumes) {
            eprintln!("provisioner: {e:#}");
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn provision_once(volumes: &Path) -> anyhow::Result<()> {
    let out = cmd::output(kubectl().args(["get", "pvc,pv", "--all-namespaces", "-o", "json"]))?;
    let list: serde_json::Value = serde_json::from_str(&out)?;
    let items = list["items"].as_array().cloned().unwrap_or_default();
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    for item in &items {
        let kind = s(&item["kind"]);
        let phase = s(&item["status"]["phase"]);
        let meta = &item["metadata"];
        if kind == "PersistentVolumeClaim"
            && phase == "Pending"
            && s(&item["spec"]["storageClassName"]) == STORAGE_CLASS
            && item["spec"]["volumeName"].is_null()
        {
            let uid = s(&meta["uid"]);
            let name = format!("bay-pv-{uid}");
            let path = volumes.join(&name);
            std::fs::create_dir_all(&path)?;
            let volume = serde_json::json!({
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": name, "labels": {"bay.xtask/provisioned": "true"}},
                "spec": {
                    "capacity": {"storage": item["spec"]["resources"]["requests"]["storage"]},
                    "accessModes": ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": STORAGE_CLASS,
                    "claimRef": {
                        "namespace": meta["namespace"],
                        "name": meta["name"],
                        "uid": uid,
                    },
                    "hostPath": {"path": path, "type": "Directory"},
                },
            });
            if let Err(e) = apply(&volume) {
                eprintln!("provisioner: {e:#}");
            } else {
                eprintln!(
                    "provisioner: {name} for claim {}/{}",
                    s(&meta["namespace"]),
                    s(&meta["name"])
                );
            }
        }
        let name = s(&meta["name"]);
        if kind == "PersistentVolume"
            && name.starts_with("bay-pv-")
            && (phase == "Released" || phase == "Failed")
            && cmd::output(kubectl().args(["delete", "pv", &name, "--wait=false"])).is_ok()
        {
            let _ = std::fs::remove_dir_all(volumes.join(&name));
            eprintln!("provisioner: deleted {name} (its claim is gone)");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(unescape_mount_path("/a\\040b/c"), "/a b/c");
        assert_eq!(unescape_mount_path("/plain"), "/plain");
        assert_eq!(unescape_mount_path("/x\\134y"), "/x\\y");
    }

    #[test]
    fn free_ports_differ() {
        let ports: [u16; 5] = free_ports().unwrap();
        let set: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(set.len(), 5, "{ports:?}");
        assert!(ports.iter().all(|p| *p != 0));
    }

    #[test]
    fn a_recycled_pid_is_not_a_component() {
        // This test process is alive but is not etcd.
        assert!(!alive(std::process::id(), "etcd"));
        assert!(!alive(u32::MAX, "etcd"));
    }
}

//! `cargo xtask ship-image`: builds the ship image from local parts only.
//!
//! Nothing is pulled from a registry. The steps, each skipped when its result is up to date:
//! 1. a Debian 12 base image ([`BASE_IMAGE`]) made with `debootstrap --variant=minbase` from the
//!    machine's own apt mirror and `docker import` (debootstrap is installed with apt when absent);
//! 2. the statically linked `ship` agent (`cargo build --release` with `+crt-static`);
//! 3. `docker build` of `images/ship/` (plus the binary) for the requested flavour(s), with the
//!    Debian packages of the flavour installed from the same mirror (docker layer cache).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail, ensure};

use crate::cmd;

/// The local Debian 12 base image every Debian-based ship image is built on.
pub const BASE_IMAGE: &str = "bay-base/debian:bookworm";
/// The Debian suite of the base image.
const SUITE: &str = "bookworm";
/// The target the static agent is built for.
const SHIP_TARGET: &str = "x86_64-unknown-linux-gnu";
/// Environment variable that overrides the Debian mirror found in `/etc/apt/sources.list*`.
const MIRROR_ENV: &str = "BAY_DEBIAN_MIRROR";

/// An image flavour (see `images/ship/README.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Flavour {
    /// The default image (`ship:latest`): the complete runtime of ship-api.md §12 (IPython, the
    /// data stack, document libraries, Node.js, git, CJK fonts).
    Full,
    /// The agent, python3 and the basics (`ship:slim`).
    Slim,
    /// Test image: the agent and a static busybox in a `FROM scratch` image (`ship:busybox`).
    Busybox,
}

impl Flavour {
    /// The tag the flavour gets when none is given.
    pub fn default_tag(self) -> &'static str {
        match self {
            Flavour::Full => "ship:latest",
            Flavour::Slim => "ship:slim",
            Flavour::Busybox => "ship:busybox",
        }
    }

    /// The flavour `cargo xtask ship-image` builds by default, whose tag Bay uses by default.
    pub const DEFAULT: Flavour = Flavour::Full;

    /// The flavour whose default tag is `tag`; the default flavour for any other tag.
    pub fn for_tag(tag: &str) -> Flavour {
        [Flavour::Full, Flavour::Slim, Flavour::Busybox]
            .into_iter()
            .find(|f| f.default_tag() == tag)
            .unwrap_or(Flavour::DEFAULT)
    }

    /// About how many minutes a build of the image takes when nothing is cached (the agent
    /// compiled, the packages downloaded and installed), measured on two cores near a mirror.
    pub fn first_build_minutes(self) -> u32 {
        match self {
            Flavour::Full => 15,
            Flavour::Slim => 3,
            Flavour::Busybox => 2,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Flavour::Slim => "slim",
            Flavour::Full => "full",
            Flavour::Busybox => "busybox",
        }
    }

    fn dockerfile(self) -> &'static str {
        match self {
            Flavour::Slim | Flavour::Full => "Dockerfile",
            Flavour::Busybox => "busybox.Dockerfile",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Flavour to build; repeat the option to build several (`--flavour full --flavour slim`).
    #[arg(long, value_enum, default_value = "full")]
    flavour: Vec<Flavour>,
    /// Tag of the image (default: `ship:latest`, `ship:slim` or `ship:busybox` by flavour).
    #[arg(long)]
    tag: Option<String>,
    /// Make the Debian base image again even when it exists.
    #[arg(long)]
    rebuild_base: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut flavours = args.flavour;
    flavours.dedup();
    if args.tag.is_some() && flavours.len() != 1 {
        bail!("--tag needs exactly one --flavour, got {}", flavours.len());
    }
    let targets: Vec<(Flavour, String)> = flavours
        .iter()
        .map(|&f| {
            (
                f,
                args.tag
                    .clone()
                    .unwrap_or_else(|| f.default_tag().to_owned()),
            )
        })
        .collect();
    build(&targets, args.rebuild_base)
}

/// Builds each flavour under its default tag.
pub fn build_flavours(flavours: &[Flavour]) -> anyhow::Result<()> {
    let targets: Vec<_> = flavours
        .iter()
        .map(|&f| (f, f.default_tag().to_owned()))
        .collect();
    build(&targets, false)
}

/// Builds every `(flavour, tag)` image, making the base image and the agent binary first.
pub fn build(targets: &[(Flavour, String)], rebuild_base: bool) -> anyhow::Result<()> {
    let start = Instant::now();
    let progress = Progress(start);
    ensure!(
        cmd::succeeds(Command::new("docker").args(["version", "--format", "{{.Server.Version}}"])),
        "the docker engine does not answer (`docker version` failed): is dockerd running?"
    );

    ensure_base_image(rebuild_base, &progress)?;

    progress.step("building the static ship agent (cargo build --release, +crt-static)");
    let binary = build_ship_binary()?;

    let context = prepare_context(&binary).context("could not prepare the docker build context")?;
    for (flavour, tag) in targets {
        progress.step(&format!(
            "building image {tag} (flavour {}; the first time about {} minutes, then seconds \
             when nothing changed)",
            flavour.name(),
            flavour.first_build_minutes()
        ));
        replacing_image(tag, || build_image(*flavour, tag, &context))?;
        let size = image_size(tag)?;
        progress.step(&format!(
            "image {tag} ready: {:.1} MB",
            size as f64 / 1_000_000.0
        ));
    }
    progress.step("done");
    Ok(())
}

/// Runs `build`, which (re)tags `tag`, then removes the image `tag` named before when it was
/// replaced, so that rebuilds do not pile up dangling images (`ship:latest` is about 1 GB). An old
/// image still used by a container stays.
pub fn replacing_image(
    tag: &str,
    build: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let id = |tag: &str| {
        capture(Command::new("docker").args(["image", "inspect", "--format", "{{.Id}}", tag]))
            .ok()
            .map(|s| s.trim().to_owned())
    };
    let before = id(tag);
    build()?;
    if let Some(old) = before
        && id(tag).as_ref() != Some(&old)
    {
        cmd::succeeds(Command::new("docker").args(["image", "rm", &old]));
    }
    Ok(())
}

/// Builds the image `tag` (of the flavour its tag names) unless the engine has it, saying so
/// and how long a first build takes.
pub fn ensure(tag: &str) -> anyhow::Result<()> {
    if image_exists(tag) {
        return Ok(());
    }
    let flavour = Flavour::for_tag(tag);
    eprintln!(
        "==> the ship image {tag} is missing: building it (first time: about {} minutes; \
         later runs reuse it)",
        flavour.first_build_minutes()
    );
    build(&[(flavour, tag.to_owned())], false)
}

/// Whether `image` exists in the local engine.
pub fn image_exists(image: &str) -> bool {
    cmd::succeeds(Command::new("docker").args(["image", "inspect", image]))
}

/// The size in bytes of a local image.
pub fn image_size(image: &str) -> anyhow::Result<u64> {
    let out =
        capture(Command::new("docker").args(["image", "inspect", "--format", "{{.Size}}", image]))?;
    out.trim()
        .parse()
        .with_context(|| format!("unexpected size {:?} of image {image}", out.trim()))
}

struct Progress(Instant);

impl Progress {
    fn step(&self, what: &str) {
        eprintln!("==> [{:>6.1}s] {what}", self.0.elapsed().as_secs_f64());
    }
}

// ---------------------------------------------------------------------------------------------
// Base image

fn ensure_base_image(rebuild: bool, progress: &Progress) -> anyhow::Result<()> {
    if !rebuild && image_exists(BASE_IMAGE) {
        progress.step(&format!(
            "base image {BASE_IMAGE} present (skipping debootstrap)"
        ));
        return Ok(());
    }
    let sources = host_apt_sources()?;
    let mirror = match std::env::var(MIRROR_ENV) {
        Ok(m) if !m.is_empty() => m,
        _ => sources
            .iter()
            .find(|s| {
                s.suites.iter().any(|x| x == SUITE) && s.components.iter().any(|c| c == "main")
            })
            .map(|s| s.uri.clone())
            .with_context(|| {
                format!(
                    "no Debian `{SUITE}` mirror with component `main` in /etc/apt/sources.list*; \
                     set {MIRROR_ENV}"
                )
            })?,
    };

    progress.step("making sure debootstrap is installed");
    ensure_debootstrap()?;

    let work = cmd::target_dir().join("ship-image");
    let rootfs = work.join(format!("rootfs-{SUITE}"));
    remove_dir_if_exists(&rootfs)?;
    fs::create_dir_all(&rootfs)
        .with_context(|| format!("could not create {}", rootfs.display()))?;

    progress.step(&format!(
        "debootstrap --variant=minbase {SUITE} from {mirror} (a minute or two)"
    ));
    cmd::run(
        Command::new("debootstrap")
            .args(["--variant=minbase", SUITE])
            .arg(&rootfs)
            .arg(&mirror),
    )?;

    configure_rootfs(&rootfs, &mirror, &sources)?;

    progress.step(&format!("importing the root file system as {BASE_IMAGE}"));
    import_rootfs(&rootfs)?;
    remove_dir_if_exists(&rootfs)?;
    Ok(())
}

/// One apt source of the host: a URI with its suites and components.
#[derive(Debug)]
struct AptSource {
    uri: String,
    suites: Vec<String>,
    components: Vec<String>,
}

/// Reads the enabled `deb` sources of `/etc/apt/sources.list` and `sources.list.d/*.{list,sources}`.
fn host_apt_sources() -> anyhow::Result<Vec<AptSource>> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        files.extend(more);
    }
    let mut sources = Vec::new();
    for file in files {
        let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("");
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        if name == "sources.list" || ext == "list" {
            sources.extend(parse_one_line_sources(&text));
        } else if ext == "sources" {
            sources.extend(parse_deb822_sources(&text));
        }
    }
    Ok(sources)
}

fn parse_one_line_sources(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace().peekable();
        if words.next() != Some("deb") {
            continue;
        }
        if words.peek().is_some_and(|w| w.starts_with('[')) {
            for w in words.by_ref() {
                if w.ends_with(']') {
                    break;
                }
            }
        }
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        out.push(AptSource {
            uri: uri.trim_end_matches('/').to_owned(),
            suites: vec![suite.to_owned()],
            components: words.map(str::to_owned).collect(),
        });
    }
    out
}

fn parse_deb822_sources(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |name: &str| -> Vec<String> {
            stanza
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim().eq_ignore_ascii_case(name).then(|| v.to_owned())
                })
                .map(|v| v.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default()
        };
        let types = field("Types");
        let enabled = field("Enabled");
        if !types.iter().any(|t| t == "deb") || enabled.iter().any(|e| e == "no") {
            continue;
        }
        let suites = field("Suites");
        let components = field("Components");
        for uri in field("URIs") {
            out.push(AptSource {
                uri: uri.trim_end_matches('/').to_owned(),
                suites: suites.clone(),
                components: components.clone(),
            });
        }
    }
    out
}

fn ensure_debootstrap() -> anyhow::Result<()> {
    if cmd::succeeds(Command::new("debootstrap").arg("--version")) {
        return Ok(());
    }
    let install = || {
        cmd::run(
            Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(["install", "-y", "--no-install-recommends", "debootstrap"]),
        )
    };
    if install().is_err() {
        cmd::run(
            Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .arg("update"),
        )?;
        install().context("could not install debootstrap with apt-get (are you root?)")?;
    }
    Ok(())
}

/// Points the base's apt at the host's Debian mirror(s) and trims caches.
fn configure_rootfs(rootfs: &Path, mirror: &str, sources: &[AptSource]) -> anyhow::Result<()> {
    let mut list =
        String::from("# Written by `cargo xtask ship-image` from the build machine's sources\n");
    let mut seen = Vec::new();
    for s in sources {
        for suite in &s.suites {
            if suite.starts_with(SUITE) && s.components.iter().any(|c| c == "main") {
                let line = format!("deb {} {suite} main\n", s.uri);
                if !seen.contains(&line) {
                    seen.push(line.clone());
                    list.push_str(&line);
                }
            }
        }
    }
    if seen.is_empty() {
        list.push_str(&format!("deb {mirror} {SUITE} main\n"));
    }
    write(&rootfs.join("etc/apt/sources.list"), &list)?;

    // A snapshot mirror serves Release files whose Valid-Until has passed: copy the host's
    // decision to accept them, or apt-get update in the image fails like it would on the host.
    let host_conf =
        capture(Command::new("apt-config").args(["dump", "Acquire::Check-Valid-Until"]))
            .unwrap_or_default();
    if host_conf.contains("\"false\"") {
        write(
            &rootfs.join("etc/apt/apt.conf.d/99bay-mirror"),
            "// Copied from the build machine: its mirror serves expired Release files\n\
             Acquire::Check-Valid-Until \"false\";\n",
        )?;
    }
    write(
        &rootfs.join("etc/apt/apt.conf.d/99bay-no-recommends"),
        "APT::Install-Recommends \"false\";\nAPT::Install-Suggests \"false\";\n",
    )?;
    trim_rootfs(rootfs)?;
    for dir in ["var/cache/apt/archives", "var/lib/apt/lists"] {
        let dir = rootfs.join(dir);
        for entry in
            fs::read_dir(&dir).with_context(|| format!("could not list {}", dir.display()))?
        {
            let path = entry?.path();
            if path.is_file() {
                fs::remove_file(&path)
                    .with_context(|| format!("could not remove {}", path.display()))?;
            }
        }
    }
    Ok(())
}

/// Installs `images/ship/dpkg-excludes` into the base and removes what it excludes (docs,
/// manuals, translations: about a third of a minbase system), as Debian's `-slim` images do.
fn trim_rootfs(rootfs: &Path) -> anyhow::Result<()> {
    let excludes = cmd::workspace_root().join("images/ship/dpkg-excludes");
    let dst = rootfs.join("etc/dpkg/dpkg.cfg.d/90-bay-excludes");
    fs::copy(&excludes, &dst)
        .with_context(|| format!("could not copy {} to {}", excludes.display(), dst.display()))?;
    let share = rootfs.join("usr/share");
    for (dir, keep) in [
        ("doc", Some("copyright")),
        ("man", None),
        ("info", None),
        ("locale", Some("locale.alias")),
        ("lintian", None),
    ] {
        let dir = share.join(dir);
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if keep == Some(name) {
                continue;
            }
            if path.is_dir() && !path.is_symlink() {
                // In /usr/share/doc/<package>/ keep only the licence.
                if let Some(keep) = keep.filter(|k| *k == "copyright") {
                    for inner in fs::read_dir(&path)
                        .with_context(|| format!("could not list {}", path.display()))?
                    {
                        let inner = inner?.path();
                        if inner.file_name().and_then(|n| n.to_str()) != Some(keep) {
                            remove_path(&inner)?;
                        }
                    }
                    continue;
                }
            }
            remove_path(&path)?;
        }
    }
    for dir in ["var/log", "var/cache/apt"] {
        let dir = rootfs.join(dir);
        for entry in
            fs::read_dir(&dir).with_context(|| format!("could not list {}", dir.display()))?
        {
            let path = entry?.path();
            if path.is_file() {
                remove_path(&path)?;
            }
        }
    }
    Ok(())
}

fn remove_path(path: &Path) -> anyhow::Result<()> {
    let result = if path.is_dir() && !path.is_symlink() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    result.with_context(|| format!("could not remove {}", path.display()))
}

/// `tar -C rootfs -c . | docker import - BASE_IMAGE`.
fn import_rootfs(rootfs: &Path) -> anyhow::Result<()> {
    let mut tar = Command::new("tar")
        .arg("--numeric-owner")
        .arg("-C")
        .arg(rootfs)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .context("could not start tar")?;
    let tar_out = tar.stdout.take().context("tar has no stdout")?;
    let import = Command::new("docker")
        .args([
            "import",
            "--change",
            "ENV LANG=C.UTF-8",
            "--change",
            "CMD [\"bash\"]",
            "--message",
            "Debian 12 minbase made by cargo xtask ship-image (debootstrap)",
            "-",
            BASE_IMAGE,
        ])
        .stdin(Stdio::from(tar_out))
        .stdout(Stdio::null())
        .status()
        .context("could not start docker import")?;
    let tar_status = tar.wait().context("could not wait for tar")?;
    ensure!(
        tar_status.success(),
        "tar of {} failed with {tar_status}",
        rootfs.display()
    );
    ensure!(
        import.success(),
        "docker import of {BASE_IMAGE} failed with {import}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Agent binary

/// Builds the static agent and returns the path of the binary.
pub fn build_ship_binary() -> anyhow::Result<PathBuf> {
    cmd::run(
        cmd::cargo()
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .args(["build", "--release", "-p", "ship", "--target", SHIP_TARGET]),
    )?;
    let binary = cmd::target_dir()
        .join(SHIP_TARGET)
        .join("release")
        .join("ship");
    ensure_static(&binary)?;
    Ok(binary)
}

/// Fails unless `path` is an ELF executable without a program interpreter (statically linked).
fn ensure_static(path: &Path) -> anyhow::Result<()> {
    let mut header = Vec::new();
    fs::File::open(path)
        .with_context(|| format!("could not open the ship binary {}", path.display()))?
        .take(1 << 20)
        .read_to_end(&mut header)
        .with_context(|| format!("could not read the ship binary {}", path.display()))?;
    ensure!(
        header.len() >= 64 && header.starts_with(b"\x7fELF") && header[4] == 2 && header[5] == 1,
        "{} is not a 64-bit little-endian ELF file",
        path.display()
    );
    let u16_at = |o: usize| u16::from_le_bytes([header[o], header[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(header[0x20..0x28].try_into()?) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let Some(kind) = header.get(at..at + 4) else {
            bail!("the program headers of {} are out of range", path.display());
        };
        if u32::from_le_bytes(kind.try_into()?) == 3 {
            bail!(
                "{} is dynamically linked (it has a PT_INTERP header); it must be built with \
                 -C target-feature=+crt-static",
                path.display()
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Image

/// Copies `images/ship/`, the agent binary and the machine's CA bundle into
/// `target/ship-image/context`.
fn prepare_context(binary: &Path) -> anyhow::Result<PathBuf> {
    let source = cmd::workspace_root().join("images").join("ship");
    let context = cmd::target_dir().join("ship-image").join("context");
    remove_dir_if_exists(&context)?;
    copy_tree(&source, &context)?;
    let _ = fs::remove_file(context.join("README.md"));
    fs::copy(binary, context.join("ship"))
        .with_context(|| format!("could not copy {} into the build context", binary.display()))?;
    let ca = context.join("build-ca.pem");
    match build_ca_bundle() {
        Some(bundle) => fs::copy(&bundle, &ca).map(drop).with_context(|| {
            format!("could not copy {} into the build context", bundle.display())
        })?,
        None => write(&ca, "")?,
    }
    Ok(context)
}

/// The CA bundle this machine trusts (`SSL_CERT_FILE`, else Debian's), which pip uses in the
/// image build to reach PyPI through a TLS-intercepting proxy; `None` when there is none (pip
/// then uses its own). Integrity does not depend on it: every wheel's sha256 is checked.
fn build_ca_bundle() -> Option<PathBuf> {
    std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("/etc/ssl/certs/ca-certificates.crt")])
        .find(|p| p.is_file())
}

fn build_image(flavour: Flavour, tag: &str, context: &Path) -> anyhow::Result<()> {
    let mut c = Command::new("docker");
    // The classic builder: it is what every engine 20.10 has without extra components, and
    // `--network host` lets the RUN steps reach the machine's Debian mirror.
    c.env("DOCKER_BUILDKIT", "0")
        .args(["build", "--network", "host", "--file"])
        .arg(context.join(flavour.dockerfile()))
        .args(["--build-arg", &format!("BASE={BASE_IMAGE}")])
        .args(["--build-arg", &format!("FLAVOUR={}", flavour.name())])
        .args([
            "--build-arg",
            &format!("SHIP_VERSION={}", env!("CARGO_PKG_VERSION")),
        ])
        .args(["--tag", tag])
        .arg(context);
    cmd::run(&mut c).with_context(|| format!("could not build image {tag}"))
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// Runs `cmd` and returns its standard output; fails with the command and its stderr.
pub fn capture(cmd: &mut Command) -> anyhow::Result<String> {
    let what = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start {what}"))?;
    ensure!(
        out.status.success(),
        "{what} failed with {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8(out.stdout).with_context(|| format!("{what} printed non-UTF-8 output"))
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    fs::write(path, text).with_context(|| format!("could not write {}", path.display()))
}

fn remove_dir_if_exists(dir: &Path) -> anyhow::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("could not remove {}", dir.display()))
        }
        _ => Ok(()),
    }
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(to).with_context(|| format!("could not create {}", to.display()))?;
    for entry in fs::read_dir(from).with_context(|| format!("could not list {}", from.display()))? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type()?.is_dir() {
            copy_tree(&src, &dst)?;
        } else {
            fs::copy(&src, &dst).with_context(|| {
                format!("could not copy {} to {}", src.display(), dst.display())
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_deb822_and_one_line_sources() {
        let deb822 = "Types: deb\n# comment\nURIs: http://deb.debian.org/debian/\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb-src\nURIs: http://x/\nSuites: bookworm\nComponents: main\n";
        let s = parse_deb822_sources(deb822);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].uri, "http://deb.debian.org/debian");
        assert_eq!(s[0].suites, ["bookworm", "bookworm-updates"]);
        let list = "deb [arch=amd64 signed-by=/k.gpg] http://m/debian bookworm main contrib\n# deb http://n/ x main\ndeb-src http://m/debian bookworm main\n";
        let s = parse_one_line_sources(list);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].uri, "http://m/debian");
        assert_eq!(s[0].components, ["main", "contrib"]);
    }

    #[test]
    fn rejects_a_missing_binary() {
        assert!(ensure_static(Path::new("/nonexistent/ship")).is_err());
    }
}

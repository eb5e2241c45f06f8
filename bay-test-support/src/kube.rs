//! The real single-node Kubernetes of the tests: `cargo xtask test` (or `cargo xtask with-kube
//! -- <command>`) builds and starts it and names it by `BAY_TEST_KUBECONFIG` and
//! `BAY_TEST_KUBE_NAMESPACE` (a namespace of the run's own).
//!
//! ```
//! // Outside xtask (and outside CI) the cluster is simply absent.
//! if std::env::var_os("BAY_TEST_KUBECONFIG").is_none() && std::env::var_os("CI").is_none() {
//!     assert!(bay_test_support::kube::Cluster::from_env("a doc test").is_none());
//! }
//! ```

use std::process::{Command, Output, Stdio};

/// The environment variable naming the cluster's kubeconfig.
pub const KUBECONFIG_VAR: &str = "BAY_TEST_KUBECONFIG";
/// The environment variable naming the namespace the tests work in.
pub const NAMESPACE_VAR: &str = "BAY_TEST_KUBE_NAMESPACE";

/// The test cluster: its kubeconfig and the namespace of this run.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// The kubeconfig's path.
    pub kubeconfig: String,
    /// The namespace the tests create their objects in.
    pub namespace: String,
}

impl Cluster {
    /// The cluster named by the environment. When it is not set, `test` (the test's name) is
    /// skipped with a loud message on stderr and `None` is returned — except under `CI=true`,
    /// where a missing cluster is a failure (panic): CI must never pass without the cluster.
    pub fn from_env(test: &str) -> Option<Self> {
        let get = |var: &str| std::env::var(var).ok().filter(|v| !v.trim().is_empty());
        match (get(KUBECONFIG_VAR), get(NAMESPACE_VAR)) {
            (Some(kubeconfig), Some(namespace)) => Some(Self {
                kubeconfig,
                namespace,
            }),
            (kubeconfig, _) => {
                let missing = if kubeconfig.is_none() {
                    KUBECONFIG_VAR
                } else {
                    NAMESPACE_VAR
                };
                let message = format!(
                    "{missing} is not set: {test} needs the real single-node Kubernetes; run \
                     it with `cargo xtask test`, or `cargo xtask with-kube -- cargo nextest run \
                     -p <crate>` (it starts the cluster and sets {KUBECONFIG_VAR} and \
                     {NAMESPACE_VAR})"
                );
                assert!(
                    !in_ci(),
                    "{message} (CI=true: a missing cluster is a failure)"
                );
                eprintln!("\n*** SKIPPED *** {message}\n");
                None
            }
        }
    }

    /// Runs `kubectl` on the cluster, in the run's namespace.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--namespace", &self.namespace])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("kubectl runs")
    }

    /// Runs `kubectl` and returns its standard output; panics with both outputs when it fails.
    pub fn kubectl_ok(&self, args: &[&str], what: &str) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "{what} (kubectl {}): {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Deletes the Pods, PVCs and Secrets matching the label `selector` and waits (at most
    /// 120 s) until they are gone: the clean-up of a test.
    pub fn delete_labelled(&self, selector: &str) {
        let _ = self.kubectl(&[
            "delete",
            "pods,persistentvolumeclaims,secrets",
            "-l",
            selector,
            "--ignore-not-found",
            "--wait=true",
            "--timeout=120s",
        ]);
    }
}

/// Whether this is a CI run (`CI` set to anything but `false`/`0`/empty).
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"))
}

//! Architectural invariants of design.md, checked on the sources: bay-core names no container
//! engine client type, depends on neither axum nor clap, and reads the environment only in
//! `config.rs`.

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn bay_core_depends_on_no_engine_client_nor_axum_nor_clap() {
    let manifest = std::fs::read_to_string(crate_dir().join("Cargo.toml")).unwrap();
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .expect("a [dependencies] table");
    for forbidden in [
        "bollard",
        "podman-api",
        "kube",
        "k8s-openapi",
        "axum",
        "clap",
    ] {
        assert!(
            !deps.lines().any(|l| l.trim_start().starts_with(forbidden)),
            "bay-core must not depend on {forbidden}"
        );
    }
}

#[test]
fn bay_core_names_no_engine_type_and_reads_env_only_in_config() {
    let mut files = Vec::new();
    sources(&crate_dir().join("src"), &mut files);
    assert!(files.len() > 5, "found the sources");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for forbidden in [
            "bollard::",
            "podman_api::",
            "kube::",
            "k8s_openapi::",
            "axum::",
            "clap::",
        ] {
            assert!(
                !text.contains(forbidden),
                "{} names {forbidden}",
                file.display()
            );
        }
        if file.file_name().is_some_and(|n| n != "config.rs") {
            for reader in ["env::var(", "env::var_os(", "env::vars(", "env::vars_os("] {
                assert!(
                    !text.contains(reader),
                    "{} reads the environment ({reader}); only config.rs may",
                    file.display()
                );
            }
        }
    }
}

//! `ContainerDriver` for Podman, modes `podman` and `podman-host` (podman-api).
//!
//! Not implemented yet: this crate is an honest skeleton. It will hold the Podman driver
//! (see `shared/design.md`, "The driver seam"). bay-server's factory reports
//! "the podman driver is not implemented yet" for these modes until it lands.

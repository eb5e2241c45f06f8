//! `ContainerDriver` for Docker, modes `docker` and `docker-host` (bollard).
//!
//! Not implemented yet: this crate is an honest skeleton that issue "Docker driver" fills.
